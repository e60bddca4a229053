//! Prometheus metrics on billing's own registry, served on `billing.metrics_addr` only.

use prometheus::{Encoder, IntCounterVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    pub registry: Registry,
    /// Webhook deliveries by provider, event type and outcome
    /// (applied, duplicate, stale, ignored, unknown_event, bad_signature, error).
    pub webhooks: IntCounterVec,
    /// Checkout requests by provider and outcome.
    pub checkouts: IntCounterVec,
    /// Toss charges by kind (first, renewal, lookup) and outcome (done, declined, unknown, error).
    pub charges: IntCounterVec,
    /// Accounts and keys: registered, registered_at_checkout, duplicate_email, key_created,
    /// key_revoked, key_rotated, last_key_kept (a refused revocation of the last active key).
    pub accounts: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry =
            Registry::new_custom(Some("stellar_billing".into()), None).expect("registry");
        let make = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric");
            registry
                .register(Box::new(c.clone()))
                .expect("register metric");
            c
        };
        Metrics {
            webhooks: make(
                "webhooks_total",
                "Webhook deliveries by provider, event and outcome",
                &["provider", "event", "outcome"],
            ),
            checkouts: make(
                "checkouts_total",
                "Checkout requests by provider and outcome",
                &["provider", "outcome"],
            ),
            charges: make(
                "toss_charges_total",
                "Toss billing charges by kind and outcome",
                &["kind", "outcome"],
            ),
            accounts: make(
                "account_events_total",
                "Account and key operations",
                &["event"],
            ),
            registry,
        }
    }

    /// Webhook event labels are bounded: only event types billing knows are labels, everything
    /// else (including whatever an unsigned Toss body claims to be) is "other".
    pub fn webhook(&self, provider: &str, event: &str, outcome: &str) {
        const KNOWN: &[&str] = &[
            "unverified",
            // Stripe
            "checkout.session.completed",
            "customer.subscription.created",
            "customer.subscription.updated",
            "customer.subscription.deleted",
            "customer.subscription.resumed",
            "customer.subscription.paused",
            "invoice.paid",
            "invoice.payment_succeeded",
            "invoice.payment_failed",
            // Lemon Squeezy
            "subscription_created",
            "subscription_updated",
            "subscription_cancelled",
            "subscription_resumed",
            "subscription_expired",
            "subscription_paused",
            "subscription_unpaused",
            "subscription_payment_success",
            "subscription_payment_recovered",
            "subscription_payment_failed",
            // Toss
            "PAYMENT_STATUS_CHANGED",
            "BILLING_DELETED",
            "DEPOSIT_CALLBACK",
        ];
        let event = if KNOWN.contains(&event) {
            event
        } else {
            "other"
        };
        self.webhooks
            .with_label_values(&[provider, event, outcome])
            .inc();
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
