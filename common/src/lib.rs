//! What the gateway and billing share, and nothing else: the gateway must not link payment code,
//! billing must not link the proxy.
//!
//! - [`config`]: layered configuration (embedded defaults ← file ← environment), typed per section.
//! - [`keys`]: the API-key format, its SHA-256 hash (identical to the original system's) and
//!   constant-time comparison.
//! - [`tiers`]: the tier table from `config/tiers.toml`.
//! - [`db`]: the account DB on SQLite or PostgreSQL, migrations, and the `with_db!` macro that
//!   writes one query body for both back-ends.
//! - [`accounts`]: the read side the gateway needs (principal by key hash).
//! - [`feed`]: the change feed that carries tier and key changes to every gateway.
//! - [`telemetry`]: tracing set-up shared by every binary.
//! - [`testing`]: helpers for tests that need a fresh PostgreSQL database.

pub mod accounts;
pub mod config;
pub mod db;
pub mod feed;
pub mod keys;
pub mod secret;
pub mod telemetry;
pub mod testing;
pub mod tiers;

pub use config::{CommonConfig, Config, ConfigError};
pub use db::Db;
pub use secret::Secret;
pub use tiers::{Tier, Tiers};
