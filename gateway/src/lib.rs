//! The Stellar Gate gateway: a pingora reverse proxy that turns a Stellar Memory engine into a
//! multi-tenant paid API without changing the engine.
//!
//! Files follow the path of a request ("The hot path" of the design):
//!
//! 0. [`proxy::ConnsPerIp`] — connections per client IP, before any request.
//! 1. [`routing`] — the one strict reading of the request line (`stellar_proto::route`): a
//!    target another server could read differently is refused; `/api/v1/*` to the engine
//!    (`/api/v1/health` public), everything else to billing.
//! 2. [`auth`] — key from `X-API-Key`/`Bearer`, form check, SHA-256, moka principal cache with a
//!    negative cache; [`feed`] keeps it fresh from the account DB's change feed.
//! 3. [`limits`] — token buckets (per account from the tier, per IP for unauthenticated routes)
//!    behind the [`limits::Limiter`] seam; [`redis_limit`] is the shared implementation.
//! 4. [`quota`] — memory quota reservations and the agent limit in the account DB, and the
//!    periodic reconciliation with the engine.
//! 5. [`proxy`] — the request path that calls all of the above, streaming, on pingora's server;
//!    `proxy/rewrite.rs` builds the upstream head from an allow-list (header hygiene);
//!    [`h1`] (in `stellar-proto`) is its HTTP/1.1 framing (heads parsed in place, chunked
//!    request bodies re-framed) and [`upstream`] holds the upstream connections ([`tls_bridge`]
//!    for an `https://` engine).
//! 6. [`errors`] — every answer the gateway writes itself, in one place; [`cors`] — which web
//!    origins may call the API from a browser, and the preflights.
//! 7. [`usage`] (write-behind counters, with [`usage_history`]: the per-minute breakdown), [`metrics`] (with [`tier_meta`]: per-tier header values
//!    and metric handles built once), [`ops`] (/metrics, /healthz, /readyz), and [`service`],
//!    which wires the pingora server and its background loops.
//!
//! ## Against the team's pingora guide (`shared/pingora.md`)
//!
//! The gateway began on `ProxyHttp` and moved off it for speed (BENCHMARKS.md, "Why the proxy
//! core changed, twice"). What the guide says still holds for the pingora server itself:
//! runtimes (§2: the gateway runs one single-threaded runtime per thread and re-registers each
//! client socket on the thread that serves it, see `proxy::adopt`), configuration, lifecycle
//! and graceful shutdown (§4), and build notes (§7). It no longer describes the request path:
//! - §1 (`ProxyHttp` phases): the steps are the functions of [`proxy`], in order, over the
//!   gateway's own HTTP/1.1 exchange ([`h1`]); there is no `request_filter` or
//!   `upstream_request_filter`.
//! - §5 (`pingora-limits`): not used; [`limits`] has its own token buckets.
//! - §6 (pingora's connector pool, peers, retries): [`upstream`] is the pool (per thread,
//!   checked for end-of-file before reuse); a bodiless request is resent once on a reused
//!   connection the upstream had closed.
//! - §8 (HTTP/1 session quirks): pingora's HTTP/1 sessions serve only the ops listener.

pub(crate) mod auth;
pub mod config;
pub(crate) mod cors;
pub(crate) mod errors;
pub(crate) mod feed;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod ops;
pub(crate) mod proxy;
pub(crate) mod quota;
pub(crate) mod redis_limit;
pub(crate) mod service;
pub(crate) mod tier_meta;
pub(crate) mod tls_bridge;
pub(crate) mod upstream;
pub(crate) mod usage;
pub(crate) mod usage_history;

pub use config::GatewayConfig;
pub use service::run;
/// HTTP/1.1 framing and the request target live in `stellar-proto` (fuzzed on their own).
pub use stellar_proto::{h1, route as routing};
