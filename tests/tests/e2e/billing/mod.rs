//! Billing against the real binary and the fake payment providers, on SQLite and PostgreSQL
//! (with the engine and a gateway in front where tier changes are checked end to end): accounts
//! and keys, checkout, each provider's webhooks, answers to an attacker, and e-mail.

mod accounts;
mod checkout;
mod data_rights;
mod hardening;
mod keys;
mod lemonsqueezy;
mod mail;
mod people;
mod stripe;
mod toss;
mod webhooks;

use stellar_tests::harness::{billing_stack, Backend, Stack};
use uuid::Uuid;

/// A provider flow's stack: billing behind the gateway (tier changes are checked through it),
/// a past-due grace of `grace_secs`, and an account registered for `email` (its id and key).
async fn customer(backend: Backend, grace_secs: u32, email: &str) -> Option<(Stack, Uuid, String)> {
    let env = [(
        "STELLAR_BILLING_PAST_DUE_GRACE_SECS",
        grace_secs.to_string(),
    )];
    let s = billing_stack(backend, true, &env).await?;
    let (uid, key) = s.register(email).await;
    Some((s, uid, key))
}
