//! End-to-end tests of Stellar Gate: they start the real binaries on free ports, wait until they
//! are healthy, talk HTTP to them and stop them when the test ends.
//!
//! The binaries are those of the workspace's `target/debug` (or `STELLAR_BIN_DIR`); the test
//! command builds them first (`cargo build --workspace --bins`).
//!
//! # Layout
//!
//! This library is the harness; the tests are one binary, `tests/e2e/main.rs` (one link of the
//! workspace instead of one per file), with a module per area:
//!
//! | file | what |
//! |---|---|
//! | `src/harness/` | [`harness::Backend`] and [`both_dbs!`] (each test on SQLite and PostgreSQL), [`harness::Stack`] (any of engine, billing with the fake providers, gateways; env overrides), the echo and capture upstreams |
//! | `src/spawn.rs` | a service process ([`spawn::Service`]), free ports, temporary directories, Redis, the PostgreSQL test database |
//! | `src/accounts.rs` | account-DB fixtures written as billing writes them |
//! | `src/fakes/` | fake Lemon Squeezy, Stripe and TossPayments, and the webhook signers |
//! | `src/relay.rs`, `src/smtp.rs` | a TCP relay to cut or slow a dependency; an SMTP server that keeps what it receives |
//! | `src/openapi_check.rs` | checks an answer against the served OpenAPI document (status, media type, schema, required headers) and records coverage |
//! | `tests/e2e/gateway/` | `proxy`, `auth`, `limits`, `quota`, `scoped_keys`, `cluster`, `hygiene` |
//! | `tests/e2e/billing/` | `accounts`, `keys`, `people`, `checkout`, `stripe`, `lemonsqueezy`, `toss`, `hardening`, `mail` |
//! | `tests/e2e/*.rs` | `contract` (every documented operation through the gateway, against `/openapi.json`), `engine_api`, `faults`, `security_inputs`, `launcher_up`, `deploy_config`, `browser` and `browser_accounts` (Chromium) |
//! | `browser/` | the Node drivers of the browser tests (`flow.mjs`, `accounts.mjs`) |
//!
//! Why this shape: each test binary links the whole workspace, so one binary instead of
//! seventeen is most of the build time of this crate; nextest still runs every test in a process
//! of its own, and [`both_dbs!`] makes a test's SQLite and PostgreSQL runs two tests that run in
//! parallel. Every service a test starts goes through [`harness::Stack`], so a service's test
//! settings live in one place: e.g. billing gets `STELLAR_AUTH_IMMEDIATE_KEY=true` (the tests
//! register through the API and use the key at once) unless the test overrides it, as the
//! verified-sign-up tests do with `false`; a test's overrides always win over the defaults.
//!
//! # Running some of them
//!
//! A test's name is its module path, and the two back-ends of a [`both_dbs!`] test are
//! `…::sqlite` and `…::postgres`. One area, or one test on one back-end:
//!
//! ```text
//! cargo nextest run --workspace -E 'test(/^billing::toss/)'
//! cargo nextest run --workspace -E 'test(/^gateway::quota::.*::sqlite$/)'
//! cargo nextest run --workspace -E 'binary(e2e)'      # every end-to-end test
//! ```
//!
//! PostgreSQL tests use `STELLAR_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432`):
//! skipped with a message when it is unreachable, a failure in CI (`CI=true`).

pub mod accounts;
pub mod fakes;
pub mod harness;
pub mod openapi_check;
pub mod relay;
pub mod smtp;
pub mod spawn;
