//! Usage history (docs/billing-api.md, "Usage history"): what the gateways counted into
//! `usage_minutes` / `usage_hours`, read back for an account over a range, by granularity,
//! grouped by key, agent or route family, as JSON or CSV; and the retention sweep (minutes
//! 48 hours, hours 90 days).

use crate::error::{ApiError, ApiResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stellar_common::{with_db, Db};
use uuid::Uuid;

pub const MINUTES_KEPT_SECS: i64 = 48 * 3600;
pub const HOURS_KEPT_SECS: i64 = 90 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Minute,
    Hour,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    Key,
    Agent,
    Route,
}

/// The query of `GET /auth/usage/history`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Query {
    /// Unix seconds or RFC 3339, aligned to the granularity (default: 24 hours, or 1 hour by
    /// minute, before `to`).
    pub from: Option<String>,
    /// Unix seconds or RFC 3339, exclusive (default: now); at most 5000 buckets.
    pub to: Option<String>,
    /// `hour` (default) or `minute`.
    pub granularity: Option<Granularity>,
    /// `key` (the key's id), `agent` or `route`; default none (group `all`).
    pub group_by: Option<GroupBy>,
    /// `json` (default) or `csv` (for a CSV export; JSON otherwise).
    #[param(pattern = "^(json|csv)$")]
    pub format: Option<String>,
}

impl Query {
    /// Whether any parameter was given (none: the original 24-hour answer).
    pub fn is_empty(&self) -> bool {
        self.from.is_none()
            && self.to.is_none()
            && self.granularity.is_none()
            && self.group_by.is_none()
            && self.format.is_none()
    }
}

/// A checked range: `[from, to)` aligned to the granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from: i64,
    pub to: i64,
    pub granularity: Granularity,
}

fn instant(raw: &str, name: &str) -> ApiResult<i64> {
    let raw = raw.trim();
    if let Ok(n) = raw.parse::<i64>() {
        return Ok(n);
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.timestamp())
        .map_err(|_| ApiError::Unprocessable(format!("{name} must be Unix seconds or RFC 3339")))
}

/// Check the query against the clock: defaults (the last 24 hours by hour, or the last hour by
/// minute), order, and what is kept (minutes: 48 hours, hours: 90 days).
pub fn range(q: &Query, now: DateTime<Utc>) -> ApiResult<Range> {
    let granularity = q.granularity.unwrap_or(Granularity::Hour);
    let (step, kept) = match granularity {
        Granularity::Minute => (60, MINUTES_KEPT_SECS),
        Granularity::Hour => (3600, HOURS_KEPT_SECS),
    };
    let now = now.timestamp();
    let to = match &q.to {
        Some(t) => instant(t, "to")?,
        None => now - now.rem_euclid(step) + step,
    };
    let from = match &q.from {
        Some(f) => instant(f, "from")?,
        None => {
            to - if granularity == Granularity::Hour {
                24 * 3600
            } else {
                3600
            }
        }
    };
    let (from, to) = (
        from - from.rem_euclid(step),
        to - to.rem_euclid(step) + if to % step == 0 { 0 } else { step },
    );
    if from >= to {
        return Err(ApiError::Unprocessable("from must be before to".into()));
    }
    if from < now - kept - step {
        return Err(ApiError::Unprocessable(format!(
            "{} buckets are kept {}: from is too far back",
            if granularity == Granularity::Hour {
                "hour"
            } else {
                "minute"
            },
            if granularity == Granularity::Hour {
                "90 days"
            } else {
                "48 hours"
            }
        )));
    }
    if (to - from) / step > 5000 {
        return Err(ApiError::Unprocessable(
            "at most 5000 buckets per request".into(),
        ));
    }
    Ok(Range {
        from,
        to,
        granularity,
    })
}

/// One row of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Row {
    pub start: i64,
    /// The key id, agent or route family; `all` without grouping.
    pub group: String,
    pub status_class: String,
    pub requests: i64,
}

/// The account's counts over `r`, grouped, oldest first.
pub async fn rows(
    db: &Db,
    account: Uuid,
    r: Range,
    group: Option<GroupBy>,
) -> sqlx::Result<Vec<Row>> {
    let (table, col) = match r.granularity {
        Granularity::Minute => ("usage_minutes", "minute_start"),
        Granularity::Hour => ("usage_hours", "hour_start"),
    };
    let group_expr = match (group, db.is_postgres()) {
        (Some(GroupBy::Key), true) => "key_id::text",
        (Some(GroupBy::Key), false) => "lower(hex(key_id))",
        (Some(GroupBy::Agent), _) => "agent",
        (Some(GroupBy::Route), _) => "route",
        (None, _) => "'all'",
    };
    let sql = format!(
        "SELECT {col} AS start, {group_expr} AS grp, status_class, CAST(SUM(requests) AS BIGINT) AS requests FROM {table} \
         WHERE user_id = $1 AND {col} >= $2 AND {col} < $3 GROUP BY {col}, grp, status_class ORDER BY {col}, grp, status_class"
    );
    let raw: Vec<(i64, String, String, i64)> = with_db!(db, p => sqlx::query_as(&sql)
        .bind(account).bind(r.from).bind(r.to).fetch_all(p).await)?;
    // SQLite gives a key id as 32 hex digits: shown as a UUID, like PostgreSQL's.
    let hex_keys = group == Some(GroupBy::Key) && !db.is_postgres();
    Ok(raw
        .into_iter()
        .map(|(start, group, status_class, requests)| Row {
            start,
            group: match Uuid::parse_str(&group) {
                Ok(u) if hex_keys => u.to_string(),
                _ => group,
            },
            status_class,
            requests,
        })
        .collect())
}

/// The rows as CSV (`start,group,status_class,requests`, RFC 4180; times as RFC 3339).
pub fn csv(rows: &[Row]) -> String {
    let mut out = String::from("start,group,status_class,requests\r\n");
    for r in rows {
        let start = DateTime::<Utc>::from_timestamp(r.start, 0)
            .map_or_else(|| r.start.to_string(), |t| t.to_rfc3339());
        let group = if r.group.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", r.group.replace('"', "\"\""))
        } else {
            r.group.clone()
        };
        out.push_str(&format!(
            "{start},{group},{},{}\r\n",
            r.status_class, r.requests
        ));
    }
    out
}

/// Delete buckets past their retention. Returns the rows removed.
pub async fn prune(db: &Db, now: DateTime<Utc>) -> sqlx::Result<u64> {
    let now = now.timestamp();
    let a = with_db!(db, p => sqlx::query("DELETE FROM usage_minutes WHERE minute_start < $1")
        .bind(now - MINUTES_KEPT_SECS).execute(p).await.map(|r| r.rows_affected()))?;
    let b = with_db!(db, p => sqlx::query("DELETE FROM usage_hours WHERE hour_start < $1")
        .bind(now - HOURS_KEPT_SECS).execute(p).await.map(|r| r.rows_affected()))?;
    Ok(a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(from: Option<&str>, to: Option<&str>, g: Option<Granularity>) -> Query {
        Query {
            from: from.map(Into::into),
            to: to.map(Into::into),
            granularity: g,
            ..Query::default()
        }
    }

    #[test]
    fn ranges_default_align_and_refuse() {
        let now = DateTime::<Utc>::from_timestamp(1_700_000_123, 0).unwrap();
        let r = range(&q(None, None, None), now).unwrap();
        assert_eq!(
            (r.to - r.from, r.to % 3600, r.granularity),
            (24 * 3600, 0, Granularity::Hour)
        );
        assert!(r.to > now.timestamp());
        let r = range(
            &q(
                Some("1699999990"),
                Some("2023-11-14T22:15:00Z"),
                Some(Granularity::Minute),
            ),
            now,
        )
        .unwrap();
        assert_eq!((r.from % 60, r.to % 60), (0, 0));
        assert_eq!(r.from, 1_699_999_980);
        for bad in [
            q(Some("x"), None, None),
            q(Some("1700000000"), Some("1690000000"), None),
            q(Some("1600000000"), None, Some(Granularity::Minute)),
        ] {
            assert_eq!(
                range(&bad, now).unwrap_err().status().as_u16(),
                422,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn csv_quotes_what_needs_it() {
        let rows = vec![Row {
            start: 0,
            group: "a,\"b\"".into(),
            status_class: "2xx".into(),
            requests: 3,
        }];
        assert_eq!(
            csv(&rows),
            "start,group,status_class,requests\r\n1970-01-01T00:00:00+00:00,\"a,\"\"b\"\"\",2xx,3\r\n"
        );
    }
}
