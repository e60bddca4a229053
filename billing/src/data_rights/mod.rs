//! Data rights (docs/billing-api.md, "Your data"): an account takes every memory with it
//! (`GET /auth/export`, `export`) and deletes itself (`DELETE /auth/account`, `erase`).
//!
//! Billing reaches the memory engine over HTTP (`engine`: `billing.engine_url`, the account id as
//! `X-Stellar-User`, each agent as `X-Stellar-Agent`, `X-API-Key` when configured), using only
//! the calls of docs/engine-api.md, so both work against any engine that speaks the API. An
//! account's memories live in the engine's default space (no agent) and in the space of each
//! agent it used through the gateway (`account_agents`); [`agents`] lists them. The API has no
//! way to list an account's agents, so memories put into the engine by another way than the
//! gateway, under an agent the account never used through it, are out of reach.
//!
//! **Deletion, in this order, each step safe to repeat** (a retry after any failure continues
//! where the last attempt stopped):
//! 1. The engine answers `GET /api/v1/stats` for every agent, else 503 and nothing changed.
//! 2. A live subscription (active or past due) is cancelled at its provider, exactly as
//!    `POST /billing/cancel` does; when the provider refuses, 502 and nothing else happens. A
//!    subscription already cancelled (running to the end of its paid period) is left as it is:
//!    it will not renew.
//! 3. Every memory of every agent is forgotten (`GET /api/v1/memories`, then
//!    `DELETE /api/v1/forget/{id}` for each: the API has no bulk delete), while the keys still
//!    work. If the engine fails here: 503, the keys and the account are untouched, and the
//!    owner retries with the same key.
//! 4. Every key is revoked (feed rows: every gateway refuses them within a second).
//! 5. After a pause (the feed's second, or the gateways' `gateway.usage_flush_secs` plus one
//!    if longer, so what they counted for the keys is written while the account still exists:
//!    `BillingSection::erase_settle`), a last sweep removes what was stored between step 3 and the revocation reaching the gateways,
//!    until `GET /api/v1/stats` says 0. If the engine fails here, the keys of step 4 are
//!    restored and the answer is 503: the account is as before, less its subscription and
//!    the memories already forgotten, and the owner can retry with the same key.
//! 6. The account's rows go in one transaction with the `account_deleted` audit row.
//!
//! Why memories before keys: revoking first would leave an owner who calls with an API key
//! (as most do) unable to retry after an engine failure — the key is gone, the account and
//! memories are not. Erasing first, with a last sweep after the revocation, means a failure at
//! any step leaves a working account that retries, and a success leaves nothing in the engine:
//! the last sweep happens only once no gateway admits the keys any more. What remains possible
//! is a store admitted before the revocation that reaches the engine after the last sweep
//! (a request body trickling in for longer than that pause).

pub mod engine;
pub mod erase;
pub mod export;
#[cfg(test)]
mod tests;

use crate::identity::audit::Event;
use crate::identity::{Actor, IdTx};
use stellar_common::{with_db, Db};
use uuid::Uuid;

/// `audit_events.action` of an export.
pub const MEMORIES_EXPORTED: &str = "memories_exported";

/// The spaces an account's memories are in: the default space (`None`) first, then each agent
/// it used, by name.
pub async fn agents(db: &Db, account: Uuid) -> sqlx::Result<Vec<Option<String>>> {
    let named: Vec<String> = with_db!(db, p => sqlx::query_scalar(
        "SELECT agent FROM account_agents WHERE user_id = $1 ORDER BY agent")
        .bind(account).fetch_all(p).await)?;
    Ok(std::iter::once(None)
        .chain(named.into_iter().map(Some))
        .collect())
}

/// One audit row for `account`, on its own.
pub async fn audit(
    db: &Db,
    by: &Actor,
    account: Uuid,
    action: &'static str,
    target: Option<String>,
) -> sqlx::Result<()> {
    with_db!(db, p => {
        let mut tx = p.begin().await?;
        tx.audit(&Event::by(by, account, action, target)).await?;
        tx.commit().await
    })
}
