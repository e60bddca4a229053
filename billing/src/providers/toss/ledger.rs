//! The charge ledger: `toss_charges`, one row per charge attempt, and the set of charges on the
//! wire from this process.
//!
//! A row is written `pending` before Toss is called (phase 1, [`Ledger::open_attempt`]) and
//! settled with the subscription change that its outcome causes: [`SETTLE_SQL`] runs inside the
//! state machine's transaction (`Effect::SettleCharge`), so a charge row and the account it paid
//! for never disagree.

use crate::money::{Currency, Money};
use crate::subscription::LOCK_ACCOUNT_SQL;
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::sync::Mutex;
use stellar_common::{with_db, Db};
use uuid::Uuid;

/// Settles a charge row: `$1` orderId, `$2` status, `$3` paymentKey (kept when NULL), `$4`
/// failure code, `$5` now. Run by the state machine in the transaction of the charge's event.
pub const SETTLE_SQL: &str =
    "UPDATE toss_charges SET status = $2, payment_key = COALESCE($3, payment_key), \
    failure_code = $4, updated_at = $5 WHERE order_id = $1";

/// `toss_charges.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeStatus {
    /// Written before Toss is called; the outcome is not known yet.
    Pending,
    Done,
    Failed,
    /// Refunded after it was done.
    Canceled,
}

impl ChargeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChargeStatus::Pending => "pending",
            ChargeStatus::Done => "done",
            ChargeStatus::Failed => "failed",
            ChargeStatus::Canceled => "canceled",
        }
    }

    fn parse(s: &str) -> Option<ChargeStatus> {
        [
            ChargeStatus::Pending,
            ChargeStatus::Done,
            ChargeStatus::Failed,
            ChargeStatus::Canceled,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// A charge's outcome as it is written with its subscription change.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargeRecord {
    pub order_id: String,
    pub status: ChargeStatus,
    pub payment_key: Option<String>,
    pub failure_code: Option<String>,
    /// When to retry a declined renewal; `None` when no retry is left.
    pub next_charge_at: Option<DateTime<Utc>>,
}

/// A charge attempt as the ledger holds it.
#[derive(Debug, Clone)]
pub struct Charge {
    pub order_id: String,
    pub user_id: Uuid,
    pub tier: String,
    pub amount: Money,
}

#[derive(sqlx::FromRow)]
struct ChargeRow {
    order_id: String,
    user_id: Uuid,
    tier: String,
    amount: i64,
    status: String,
}

impl ChargeRow {
    fn split(self) -> (Charge, Option<ChargeStatus>) {
        let status = ChargeStatus::parse(&self.status);
        let charge = Charge {
            order_id: self.order_id,
            user_id: self.user_id,
            tier: self.tier,
            // Toss charges are in won (see `Money::from_price` where they are made).
            amount: Money::new(self.amount, Currency::KRW),
        };
        (charge, status)
    }
}

const CHARGE_COLUMNS: &str = "order_id, user_id, tier, amount, status";

/// orderIds match `^[A-Za-z0-9_-]{6,64}$` (Toss's rule).
pub fn valid_order_id(id: &str) -> bool {
    (6..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub struct Ledger {
    db: Db,
    /// orderIds whose charge request is on the wire from this process; the reconciler leaves
    /// them alone. Held only for set operations, never across an await.
    in_flight: Mutex<HashSet<String>>,
}

impl Ledger {
    pub fn new(db: Db) -> Ledger {
        Ledger {
            db,
            in_flight: Mutex::new(HashSet::new()),
        }
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_flight.lock().expect("in-flight set")
    }

    /// Mark a charge request as on the wire from this process.
    pub fn send_starts(&self, order_id: &str) {
        self.in_flight().insert(order_id.to_string());
    }

    /// The request is answered (or given up on).
    pub fn send_ends(&self, order_id: &str) {
        self.in_flight().remove(order_id);
    }

    pub fn is_in_flight(&self, order_id: &str) -> bool {
        self.in_flight().contains(order_id)
    }

    /// Phase 1 of a charge: the pending row, committed before Toss is called, and marked in
    /// flight (the caller ends that with [`Ledger::send_ends`]). `None` when the account already
    /// has a charge whose outcome is not known yet: a second charge (a retried confirmation, two
    /// at once, a renewal racing a confirmation) must wait for that one to be settled, or a lost
    /// answer followed by a retry would charge the card twice. The check and the insert run
    /// under the account's row lock (the first statement takes it, and SQLite's writer lock),
    /// so two attempts cannot both pass it.
    pub async fn open_attempt(
        &self,
        user_id: Uuid,
        tier: &str,
        amount: Money,
        period: &str,
    ) -> sqlx::Result<Option<Charge>> {
        let now = Utc::now();
        let order_id: Option<String> = with_db!(&self.db, p => {
            let mut tx = p.begin().await?;
            sqlx::query(LOCK_ACCOUNT_SQL).bind(user_id).execute(&mut *tx).await?;
            let pending: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM toss_charges WHERE user_id = $1 AND status = 'pending'")
                .bind(user_id).fetch_one(&mut *tx).await?;
            if pending > 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            let max: Option<i32> = sqlx::query_scalar(
                "SELECT MAX(attempt) FROM toss_charges WHERE user_id = $1 AND period = $2")
                .bind(user_id).bind(period).fetch_one(&mut *tx).await?;
            let attempt = max.unwrap_or(0) + 1;
            let order_id = format!("sg-{}-{period}-{attempt}", user_id.simple());
            debug_assert!(valid_order_id(&order_id));
            // Marked in flight before the row commits, so the reconciler never resends it.
            self.send_starts(&order_id);
            let inserted = sqlx::query(
                "INSERT INTO toss_charges (order_id, user_id, period, attempt, amount, tier, status, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7, $7)")
                .bind(&order_id).bind(user_id).bind(period).bind(attempt).bind(amount.minor)
                .bind(tier).bind(now).execute(&mut *tx).await
                .and(Ok(()));
            let committed = match inserted {
                Ok(()) => tx.commit().await,
                Err(e) => Err(e),
            };
            if let Err(e) = committed {
                self.send_ends(&order_id);
                return Err(e);
            }
            Some(order_id)
        });
        Ok(order_id.map(|order_id| Charge {
            order_id,
            user_id,
            tier: tier.to_string(),
            amount,
        }))
    }

    /// Every charge still `pending`, oldest first.
    pub async fn pending(&self) -> sqlx::Result<Vec<Charge>> {
        let sql = format!(
            "SELECT {CHARGE_COLUMNS} FROM toss_charges WHERE status = 'pending' ORDER BY created_at"
        );
        let rows: Vec<ChargeRow> =
            with_db!(&self.db, p => sqlx::query_as(&sql).fetch_all(p).await)?;
        Ok(rows.into_iter().map(|r| r.split().0).collect())
    }

    /// The charge with this orderId and its status (`None` for a status this code does not know).
    pub async fn by_order(
        &self,
        order_id: &str,
    ) -> sqlx::Result<Option<(Charge, Option<ChargeStatus>)>> {
        let sql = format!("SELECT {CHARGE_COLUMNS} FROM toss_charges WHERE order_id = $1");
        let row: Option<ChargeRow> =
            with_db!(&self.db, p => sqlx::query_as(&sql).bind(order_id).fetch_optional(p).await)?;
        Ok(row.map(ChargeRow::split))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::toss::client::idempotency_key;

    #[test]
    fn order_ids_fit_toss_rules() {
        let id = format!("sg-{}-202607-12", Uuid::new_v4().simple());
        assert!(valid_order_id(&id), "{id}");
        assert!(id.len() <= 64);
        assert!(!valid_order_id("short"));
        assert!(!valid_order_id("has.dot.inside"));
        assert!(idempotency_key(&id).len() <= 300);
    }

    #[test]
    fn statuses_round_trip() {
        for s in ["pending", "done", "failed", "canceled"] {
            assert_eq!(ChargeStatus::parse(s).map(ChargeStatus::as_str), Some(s));
        }
        assert_eq!(ChargeStatus::parse("DONE"), None);
    }
}
