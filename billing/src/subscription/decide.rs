//! The pure decision: the state an event leads to, given the account's row. No I/O, no clock
//! (`now` is passed in), so every transition is unit-tested below.

use super::{Change, Event, Outcome, Status};
use crate::accounts::User;
use chrono::{DateTime, Utc};

/// The state columns that [`super::apply`] may change.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct State {
    pub tier: String,
    pub status: Status,
    pub period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub past_due_since: Option<DateTime<Utc>>,
}

impl State {
    fn of(u: &User) -> State {
        State {
            tier: u.tier.clone(),
            status: u.subscription_status,
            period_end: u.current_period_end,
            cancel_at_period_end: u.cancel_at_period_end,
            past_due_since: u.past_due_since,
        }
    }
}

/// The state after `ev` given the user's current row, or `None` when the event must not touch
/// the state. `free` is the tier a lapsed account drops to.
pub(super) fn decide(
    u: &User,
    ev: &Event,
    free: &str,
    now: DateTime<Utc>,
) -> Result<Option<State>, Outcome> {
    let cur = State::of(u);
    let paid = u.tier != free;
    let same_sub = match (&ev.refs.subscription_id, &u.provider_subscription_id) {
        (Some(a), Some(b)) => a == b && u.provider.as_deref() == Some(ev.provider),
        _ => true,
    };
    let live = u.subscription_status.is_live();
    if matches!(ev.change, Change::Link) {
        return Ok(None);
    }
    if u.provider_state_at
        .is_some_and(|last| ev.occurred_at < last)
    {
        return Err(Outcome::Stale);
    }
    // An event about another subscription (e.g. the old one after switching provider) may start
    // a new subscription but never end or degrade the current one.
    if !same_sub && live && !starts(&ev.change) {
        return Err(Outcome::NotCurrent);
    }
    // Since when the account is past due: kept while it stays past due.
    let past_due_since = || {
        let since = if u.subscription_status == Status::PastDue {
            u.past_due_since
        } else {
            None
        };
        Some(since.unwrap_or(ev.occurred_at.min(now)))
    };
    let mut next = cur.clone();
    match &ev.change {
        Change::Link => {}
        Change::Snapshot {
            status,
            tier,
            period_end,
        } => {
            let tier = tier.clone().or_else(|| paid.then(|| u.tier.clone()));
            let period_end = period_end.or(u.current_period_end);
            match status {
                Status::Active => {
                    let Some(t) = tier else { return Ok(None) };
                    next = State {
                        tier: t,
                        status: Status::Active,
                        period_end,
                        cancel_at_period_end: false,
                        past_due_since: None,
                    };
                }
                Status::Cancelled if period_end.is_some_and(|e| e > now) => {
                    let Some(t) = tier else { return Ok(None) };
                    next = State {
                        tier: t,
                        status: Status::Cancelled,
                        period_end,
                        cancel_at_period_end: true,
                        past_due_since: None,
                    };
                }
                Status::PastDue => {
                    let Some(t) = tier else { return Ok(None) };
                    next = State {
                        tier: t,
                        status: Status::PastDue,
                        period_end,
                        cancel_at_period_end: u.cancel_at_period_end,
                        past_due_since: past_due_since(),
                    };
                }
                // Cancelled with the period already over is the same as expired (and no
                // subscription at all, which no provider reports, too).
                Status::Cancelled | Status::Expired | Status::None => {
                    next = State {
                        tier: free.into(),
                        status: Status::Expired,
                        period_end,
                        cancel_at_period_end: false,
                        past_due_since: None,
                    };
                }
            }
        }
        Change::PaymentSucceeded { tier, period_end } => {
            let Some(t) = tier.clone().or_else(|| paid.then(|| u.tier.clone())) else {
                return Ok(None);
            };
            let period_end = match (period_end, u.current_period_end) {
                (Some(a), Some(b)) if same_sub => Some((*a).max(b)),
                (Some(a), _) => Some(*a),
                (None, b) => b,
            };
            let status = if u.cancel_at_period_end && same_sub {
                Status::Cancelled
            } else {
                Status::Active
            };
            next = State {
                tier: t,
                status,
                period_end,
                cancel_at_period_end: u.cancel_at_period_end && same_sub,
                past_due_since: None,
            };
        }
        Change::PaymentFailed => {
            if !paid || !live {
                return Ok(None);
            }
            next.status = Status::PastDue;
            next.past_due_since = past_due_since();
        }
    }
    Ok((next != cur).then_some(next))
}

/// A change that may start a subscription (so it also links the provider's ids when it changes
/// nothing).
pub(super) fn starts(change: &Change) -> bool {
    matches!(
        change,
        Change::Snapshot {
            status: Status::Active,
            ..
        } | Change::PaymentSucceeded { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounts::User;
    use crate::subscription::Refs;
    use chrono::Duration;
    use serde_json::Value;
    use uuid::Uuid;

    fn user(tier: &str, status: &str) -> User {
        User {
            id: Uuid::nil(),
            email: "a@b.co".into(),
            tier: tier.into(),
            provider: Some("stripe".into()),
            provider_customer_id: Some("cus_1".into()),
            provider_subscription_id: Some("sub_1".into()),
            subscription_status: status.parse().unwrap(),
            current_period_end: Some(Utc::now() + Duration::days(10)),
            cancel_at_period_end: false,
            past_due_since: None,
            provider_state_at: Some(Utc::now() - Duration::hours(1)),
            toss_customer_key: None,
            billing_key_enc: None,
            charge_attempts: 0,
            next_charge_at: None,
        }
    }

    fn ev(change: Change, at: DateTime<Utc>, sub: &str) -> Event {
        Event::new(
            "stripe",
            "e".into(),
            "t",
            at,
            Refs {
                user_id: None,
                subscription_id: Some(sub.into()),
                customer_id: None,
            },
            change,
            Value::Null,
        )
    }

    #[test]
    fn transitions() {
        let now = Utc::now();
        let end = now + Duration::days(20);
        let u = user("free", "none");
        let s = decide(
            &u,
            &ev(
                Change::Snapshot {
                    status: Status::Active,
                    tier: Some("pro".into()),
                    period_end: Some(end),
                },
                now,
                "sub_1",
            ),
            "free",
            now,
        )
        .unwrap()
        .unwrap();
        assert_eq!((s.tier.as_str(), s.status.as_str()), ("pro", "active"));

        let u = user("pro", "active");
        let s = decide(
            &u,
            &ev(
                Change::Snapshot {
                    status: Status::Cancelled,
                    tier: None,
                    period_end: Some(end),
                },
                now,
                "sub_1",
            ),
            "free",
            now,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (s.tier.as_str(), s.status.as_str(), s.cancel_at_period_end),
            ("pro", "cancelled", true)
        );

        let s = decide(&u, &ev(Change::PaymentFailed, now, "sub_1"), "free", now)
            .unwrap()
            .unwrap();
        assert_eq!((s.tier.as_str(), s.status.as_str()), ("pro", "past_due"));
        assert!(s.past_due_since.is_some());

        let s = decide(
            &u,
            &ev(
                Change::Snapshot {
                    status: Status::Expired,
                    tier: None,
                    period_end: None,
                },
                now,
                "sub_1",
            ),
            "free",
            now,
        )
        .unwrap()
        .unwrap();
        assert_eq!((s.tier.as_str(), s.status.as_str()), ("free", "expired"));
    }

    #[test]
    fn stale_and_foreign_events_change_nothing() {
        let now = Utc::now();
        let u = user("pro", "active");
        let old = now - Duration::hours(2);
        assert_eq!(
            decide(
                &u,
                &ev(
                    Change::Snapshot {
                        status: Status::Expired,
                        tier: None,
                        period_end: None
                    },
                    old,
                    "sub_1"
                ),
                "free",
                now
            ),
            Err(Outcome::Stale)
        );
        assert_eq!(
            decide(
                &u,
                &ev(
                    Change::Snapshot {
                        status: Status::Expired,
                        tier: None,
                        period_end: None
                    },
                    now,
                    "sub_old"
                ),
                "free",
                now
            ),
            Err(Outcome::NotCurrent)
        );
        // A payment without a known tier on a free account changes nothing.
        let f = user("free", "none");
        assert_eq!(
            decide(
                &f,
                &ev(
                    Change::PaymentSucceeded {
                        tier: None,
                        period_end: None
                    },
                    now,
                    "sub_1"
                ),
                "free",
                now
            ),
            Ok(None)
        );
        // Repeating the current state is not a change.
        let same = decide(
            &u,
            &ev(
                Change::Snapshot {
                    status: Status::Active,
                    tier: Some("pro".into()),
                    period_end: u.current_period_end,
                },
                now,
                "sub_1",
            ),
            "free",
            now,
        );
        assert_eq!(same, Ok(None));
    }
}
