//! The gateway in front of the real engine (and billing, or small upstreams that show what it
//! forwarded), on SQLite and PostgreSQL: proxying, auth, rate limits, quota, two gateways on one
//! cluster, and what it refuses to pass on.

mod auth;
mod cluster;
mod cors;
mod hygiene;
mod limits;
mod proxy;
mod quota;
mod scoped_keys;
mod usage_history;
