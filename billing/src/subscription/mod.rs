//! The subscription state machine every provider feeds, and the only writer of account state
//! besides accounts and keys (`accounts`).
//!
//! Providers translate their events into an [`Event`]: who (ids we set at checkout, or the
//! provider's subscription/customer ids), when (the provider's own timestamp), what ([`Change`])
//! and which other account writes go with it ([`Effect`]s). [`apply`] then, in ONE transaction:
//!
//! 1. inserts `(provider, event_id)` into `processed_webhooks` — a duplicate delivery conflicts
//!    here and the transaction is dropped (the first statement is a write, which also takes the
//!    writer lock on SQLite, so nothing is read before the lock is held);
//! 2. locks the user row and decides the new state ([`decide`], a pure function); an event older
//!    than the newest one already applied (`provider_state_at`) changes nothing, so reordered
//!    deliveries never move an account back to a stale state;
//! 3. writes the new state, the event's effects, a `subscription_events` audit row and, when
//!    anything a gateway caches changed, a change-feed row.
//!
//! An effect that comes without an event (a Toss customerKey at checkout, a card's billing key)
//! is applied alone by [`apply_effect`], in its own transaction.
//!
//! States ([`Status`], `users.subscription_status`): `none` → `active` ⇄ `past_due`, `active` ⇄
//! `cancelled` (paid period still running, tier kept), and `expired` (tier back to the first
//! tier). The background sweep ([`sweep`]) ends cancelled subscriptions at their period end and
//! past-due ones after the grace period.
//!
//! Files: `status` (the stored status type), `decide` (the pure transition function), `apply`
//! (the transaction, effects, the sweep).

mod apply;
mod decide;
mod status;

pub(crate) use apply::LOCK_ACCOUNT_SQL;
pub use apply::{apply, apply_effect, scrub, sweep};
pub use status::{Status, UnknownStatus};

use crate::money::Money;
use crate::providers::toss::ledger::ChargeRecord;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// What an event says about the subscription.
#[derive(Debug, Clone)]
pub enum Change {
    /// The provider's current view of the subscription (created, updated, plan change,
    /// cancelled, resumed, expired). `tier` is mapped from the provider's price/variant id.
    Snapshot {
        status: Status,
        tier: Option<String>,
        period_end: Option<DateTime<Utc>>,
    },
    /// A payment went through: active again, dunning cleared, period extended when known.
    PaymentSucceeded {
        tier: Option<String>,
        period_end: Option<DateTime<Utc>>,
    },
    /// A renewal payment failed: past_due (tier kept until the grace period ends).
    PaymentFailed,
    /// Only links provider ids to the account (Stripe's checkout.session.completed).
    Link,
}

/// Who the event is about, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct Refs {
    /// Our user id, from data we attached at checkout (custom data, client_reference_id, metadata).
    pub user_id: Option<Uuid>,
    pub subscription_id: Option<String>,
    pub customer_id: Option<String>,
}

/// An account write a provider needs besides the state change: applied by the state machine,
/// with its event in the event's transaction, or alone with [`apply_effect`].
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Toss checkout: the account's customerKey, unless it has one already.
    IssueCustomerKey(String),
    /// Toss card registration: the billing key (encrypted) and its SHA-256 hex.
    StoreBillingKey { enc: String, hash: String },
    /// Toss `BILLING_DELETED`: forget the billing key with this hash if it is still the
    /// account's. With the cancellation in one transaction, renewals stop exactly when it commits.
    DropBillingKey { hash: String },
    /// The subscription is this provider's from now on, unless another one is live (a settled
    /// Toss charge). Applied before the decision reads the account.
    ClaimFor(&'static str),
    /// A Toss charge's outcome: its ledger row and the account's renewal retry schedule.
    SettleCharge(ChargeRecord),
}

#[derive(Debug, Clone)]
pub struct Event {
    pub provider: &'static str,
    /// Dedupe key (`processed_webhooks.event_id`).
    pub event_id: String,
    /// The provider's event name, for the audit row and metrics.
    pub event_type: String,
    /// The provider's timestamp of the state this event describes.
    pub occurred_at: DateTime<Utc>,
    pub refs: Refs,
    pub change: Change,
    /// What was paid or refunded, for the audit row.
    pub amount: Option<Money>,
    pub raw: Value,
    /// Applied in the event's transaction, in order, unless the event is a duplicate or
    /// matches no account.
    pub effects: Vec<Effect>,
}

impl Event {
    /// An event about `change` with nothing else attached (no amount, no effects).
    pub fn new(
        provider: &'static str,
        event_id: String,
        event_type: impl Into<String>,
        occurred_at: DateTime<Utc>,
        refs: Refs,
        change: Change,
        raw: Value,
    ) -> Event {
        Event {
            provider,
            event_id,
            event_type: event_type.into(),
            occurred_at,
            refs,
            change,
            amount: None,
            raw,
            effects: Vec::new(),
        }
    }

    pub fn with_amount(mut self, amount: Option<Money>) -> Event {
        self.amount = amount;
        self
    }

    pub fn with_effect(mut self, effect: Effect) -> Event {
        self.effects.push(effect);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// State changed (or ids linked) and the audit row written.
    Applied,
    /// Recorded, but nothing to change (already in that state, or a payment note).
    Recorded,
    /// Older than what was already applied: recorded, state untouched.
    Stale,
    /// About a subscription that is not the account's current one: recorded, state untouched.
    NotCurrent,
    Duplicate,
    /// No account matches; nothing written.
    Unmapped,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Recorded => "recorded",
            Outcome::Stale => "stale",
            Outcome::NotCurrent => "not_current",
            Outcome::Duplicate => "duplicate",
            Outcome::Unmapped => "unmapped",
        }
    }
}
