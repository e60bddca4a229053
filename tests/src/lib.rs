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
//! | `tests/e2e/gateway/` | `proxy`, `auth`, `limits`, `quota`, `cluster`, `hygiene` |
//! | `tests/e2e/billing/` | `accounts`, `keys`, `checkout`, `stripe`, `lemonsqueezy`, `toss`, `hardening`, `mail` |
//! | `tests/e2e/*.rs` | `engine_api`, `faults`, `security_inputs`, `launcher_up`, `deploy_config`, `browser` (Chromium) |
//! | `browser/` | the Node driver of the browser test |
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
pub mod relay;
pub mod smtp;
pub mod spawn;
