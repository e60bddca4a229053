//! Scoped keys (docs/billing-api.md, "Scoped keys"): a key restricted when created or later —
//! read-only, bound to one agent, an expiry, its own requests per minute below the tier's. The
//! request fields are validated into a [`KeyScope`] here; changes write a `key_changed` feed row
//! (gateways drop the cached principal within a second) and an audit row, in one transaction.

use crate::error::{ApiError, ApiResult};
use crate::identity::audit::Event;
use crate::identity::{Actor, IdTx};
use crate::webhooks::{event, key_data, WebhookTx};
use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use stellar_common::accounts::{valid_agent, KeyScope};
use stellar_common::feed::{self, APPEND_SQL};
use stellar_common::{with_db, Db, Tier};
use uuid::Uuid;

/// The longest expiry accepted (10 years).
const MAX_EXPIRY_DAYS: i64 = 3650;

/// The scope fields of a create or update request. On update, an absent field keeps its value
/// and `null` clears it. Unknown fields are refused (422): a misspelt restriction never yields
/// a broader key.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeFields {
    /// 1–100 printable characters (create: default "Default").
    #[serde(default)]
    #[schema(nullable = false)]
    pub name: Option<String>,
    /// The key may only read.
    #[serde(default)]
    #[schema(nullable = false)]
    pub read_only: Option<bool>,
    /// Bind the key to this agent: 1–64 of `A-Z a-z 0-9 . _ : -`; `null` clears.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<String>)]
    pub agent: Option<Option<String>>,
    /// RFC 3339, in the future, within 10 years; `null` clears.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// Instead of `expires_at`: seconds from now.
    #[serde(default)]
    #[schema(nullable = false)]
    pub expires_in_secs: Option<i64>,
    /// The key's own requests per minute, 1 to the tier's; `null` clears.
    #[serde(default, deserialize_with = "some")]
    #[schema(value_type = Option<i64>)]
    pub requests_per_minute: Option<Option<i64>>,
}

/// Present-and-null as `Some(None)`, so an update can clear a field.
fn some<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::Unprocessable(m.into())
}

/// Apply `f` to `base` (the key's current scope; the default for a new key), checked against
/// the account's tier and the clock.
pub fn apply(
    base: &KeyScope,
    f: &ScopeFields,
    tier: &Tier,
    now: DateTime<Utc>,
) -> ApiResult<KeyScope> {
    let mut s = base.clone();
    if let Some(r) = f.read_only {
        s.read_only = r;
    }
    if let Some(a) = &f.agent {
        s.agent = match a.as_deref().map(str::trim) {
            None => None,
            Some(a) if valid_agent(a) => Some(a.to_string()),
            Some(_) => return Err(bad("agent must be 1–64 characters of A-Z a-z 0-9 . _ : -")),
        };
    }
    match (&f.expires_at, f.expires_in_secs) {
        (Some(_), Some(_)) => return Err(bad("give expires_at or expires_in_secs, not both")),
        (Some(at), None) => s.expires_at = *at,
        (None, Some(secs)) => {
            if secs < 1 {
                return Err(bad("expires_in_secs must be at least 1"));
            }
            s.expires_at = Some(now + Duration::seconds(secs.min(MAX_EXPIRY_DAYS * 86_400)));
        }
        (None, None) => {}
    }
    if let Some(at) = s.expires_at {
        if f.expires_at.is_some() && at <= now {
            return Err(bad("expires_at must be in the future"));
        }
        if at > now + Duration::days(MAX_EXPIRY_DAYS) {
            return Err(bad("expires_at must be within 10 years"));
        }
    }
    if let Some(rpm) = &f.requests_per_minute {
        s.requests_per_minute = match *rpm {
            None => None,
            Some(n) if n >= 1 && n <= i64::from(tier.requests_per_minute) => Some(n as i32),
            Some(_) => {
                return Err(bad(format!(
                    "requests_per_minute must be 1–{} (the {} plan's limit)",
                    tier.requests_per_minute, tier.name
                )))
            }
        };
    }
    Ok(s)
}

/// The current scope of key `id` of `account` (and its hash), if it is active.
pub async fn current(db: &Db, account: Uuid, id: Uuid) -> sqlx::Result<Option<(KeyScope, String)>> {
    type Row = (
        bool,
        Option<String>,
        Option<DateTime<Utc>>,
        Option<i32>,
        String,
    );
    let row: Option<Row> = with_db!(db, p => sqlx::query_as(
        "SELECT read_only, agent, expires_at, requests_per_minute, key_hash FROM api_keys \
         WHERE id = $1 AND user_id = $2 AND is_active = TRUE")
        .bind(id).bind(account).fetch_optional(p).await)?;
    Ok(row.map(
        |(read_only, agent, expires_at, requests_per_minute, hash)| {
            (
                KeyScope {
                    read_only,
                    agent,
                    expires_at,
                    requests_per_minute,
                },
                hash,
            )
        },
    ))
}

/// Store `scope` (and `name`, when given) on key `id`; gateways drop its cached principal.
pub async fn update(
    db: &Db,
    account: Uuid,
    id: Uuid,
    hash: &str,
    scope: &KeyScope,
    name: Option<&str>,
    by: &Actor,
) -> sqlx::Result<()> {
    let now = Utc::now();
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        sqlx::query(
            "UPDATE api_keys SET read_only = $3, agent = $4, expires_at = $5, requests_per_minute = $6, \
             name = COALESCE($7, name) WHERE id = $1 AND user_id = $2")
            .bind(id).bind(account).bind(scope.read_only).bind(scope.agent.as_deref())
            .bind(scope.expires_at).bind(scope.requests_per_minute).bind(name)
            .execute(&mut *tx).await?;
        sqlx::query(APPEND_SQL).bind(Some(account)).bind(Some(hash)).bind(feed::kind::KEY_CHANGED).bind(now)
            .execute(&mut *tx).await?;
        tx.audit(&Event::by(by, account, "key_changed", Some(format!("{id}: {}", describe(scope))))).await?;
        tx.emit_webhook(account, event::KEY_CHANGED, key_data(id, Some(scope), serde_json::json!({"name": name, "changed_by": &by.email}))).await?;
        tx.commit().await?;
    });
    Ok(())
}

/// A short description for the audit log.
pub fn describe(s: &KeyScope) -> String {
    let mut parts = vec![if s.read_only {
        "read-only"
    } else {
        "read-write"
    }
    .to_string()];
    if let Some(a) = &s.agent {
        parts.push(format!("agent {a}"));
    }
    if let Some(t) = s.expires_at {
        parts.push(format!("expires {}", t.to_rfc3339()));
    }
    if let Some(n) = s.requests_per_minute {
        parts.push(format!("{n}/min"));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tier() -> Tier {
        Tier {
            name: "pro".into(),
            max_memories: 10,
            max_agents: 5,
            requests_per_minute: 300,
            burst: 300,
            max_api_keys: 5,
            max_members: 3,
            price_usd: 29,
            price_krw: 0,
        }
    }

    fn fields(json: &str) -> ScopeFields {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn scope_fields_validate_and_merge() {
        let now = Utc::now();
        let s = apply(
            &KeyScope::default(),
            &fields(r#"{"read_only":true,"agent":"bot-1","expires_in_secs":60,"requests_per_minute":10}"#),
            &tier(),
            now,
        )
        .unwrap();
        assert!(s.read_only);
        assert_eq!(s.agent.as_deref(), Some("bot-1"));
        assert_eq!(s.expires_at, Some(now + Duration::seconds(60)));
        assert_eq!(s.requests_per_minute, Some(10));
        // Absent keeps, null clears.
        let t = apply(
            &s,
            &fields(r#"{"agent":null,"requests_per_minute":null}"#),
            &tier(),
            now,
        )
        .unwrap();
        assert_eq!(
            (t.read_only, t.agent, t.requests_per_minute),
            (true, None, None)
        );
        assert_eq!(t.expires_at, s.expires_at);
        for bad in [
            r#"{"agent":"no spaces"}"#,
            r#"{"agent":""}"#,
            r#"{"requests_per_minute":301}"#,
            r#"{"requests_per_minute":0}"#,
            r#"{"expires_in_secs":0}"#,
            r#"{"expires_at":"2001-01-01T00:00:00Z"}"#,
            r#"{"expires_at":"2999-01-01T00:00:00Z","expires_in_secs":5}"#,
        ] {
            let e = apply(&KeyScope::default(), &fields(bad), &tier(), now).unwrap_err();
            assert_eq!(e.status().as_u16(), 422, "{bad}");
        }
        assert!(serde_json::from_str::<ScopeFields>(r#"{"scope":"all"}"#).is_err());
    }
}
