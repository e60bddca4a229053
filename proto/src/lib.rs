//! The parsers that face untrusted bytes, kept apart from the services so that each can be
//! tested and fuzzed without a socket, a database or pingora (`fuzz/` builds only this crate):
//!
//! - [`h1`] — HTTP/1.1 heads and body framing (RFC 9112), as the gateway forwards them.
//! - [`route`] — the request target and which upstream and quota step it belongs to.
//! - [`webhook`] — payment-provider webhook signatures (Stripe, Lemon Squeezy) and the Toss
//!   webhook body, checked before billing trusts a delivery.

pub mod h1;
pub mod route;
pub mod webhook;
