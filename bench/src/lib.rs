//! Benchmark commands (not tests): `stellar-bench engine`, `stellar-bench gateway`,
//! `stellar-bench soak`.
//! Each starts release binaries on free ports, drives them over loopback, and prints a Markdown
//! report for BENCHMARKS.md.

pub mod engine;
pub mod gateway;
pub mod relay;
pub mod soak;
