//! The end-to-end tests: one test binary (one link of the whole workspace instead of one per
//! file), one module per area. The harness they share is the library's `stellar_tests::harness`;
//! the crate doc (`tests/src/lib.rs`) maps the files and says how to run one area.

mod billing;
mod browser;
mod browser_accounts;
mod browser_docs;
mod browser_usage;
mod contract;
mod deploy_config;
mod engine_api;
mod faults;
mod fronting;
mod gateway;
mod launcher_up;
mod security_inputs;
