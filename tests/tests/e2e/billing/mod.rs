//! Billing against the real binary and the fake payment providers, on SQLite and PostgreSQL
//! (with the engine and a gateway in front where tier changes are checked end to end): accounts
//! and keys, checkout, each provider's webhooks, answers to an attacker, and e-mail.

mod accounts;
mod checkout;
mod hardening;
mod keys;
mod lemonsqueezy;
mod mail;
mod people;
mod stripe;
mod toss;
