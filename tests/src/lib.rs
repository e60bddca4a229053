//! The end-to-end harness: start the real binaries on free ports, wait until they are healthy,
//! stop them when the test ends. Tests live in `tests/tests/*.rs`.
//!
//! The binaries are those of the workspace's `target/debug` (or `STELLAR_BIN_DIR`); the test
//! command builds them first (`cargo build --workspace --bins`).

pub mod accounts;
pub mod fakes;
pub mod relay;
pub mod smtp;
pub mod spawn;
