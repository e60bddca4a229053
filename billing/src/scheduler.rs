//! The background job: first resolves Toss charges a crash left pending, then every
//! `billing.scheduler_interval_secs` charges due Toss renewals and ends subscriptions whose paid
//! period or grace period is over, and prunes usage history past its retention. Stops when
//! shutdown is signalled.

use crate::state::AppState;
use crate::subscription;
use std::time::Duration;
use tokio::sync::watch;

pub async fn run(st: AppState, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_secs_f64(st.settings.billing.scheduler_interval_secs);
    loop {
        tick(&st).await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => break,
        }
    }
    tracing::debug!("scheduler stopped");
}

async fn tick(st: &AppState) {
    let toss = &st.providers.toss;
    if let Err(e) = toss.reconcile_pending().await {
        tracing::error!(error = %e, "reconciling pending toss charges failed");
    }
    if let Err(e) = toss.charge_due().await {
        tracing::error!(error = %e, "charging due toss subscriptions failed");
    }
    let free = &st.settings.tiers.default_tier().name;
    match subscription::sweep(
        &st.db,
        free,
        st.settings.billing.past_due_grace_secs,
        chrono::Utc::now(),
    )
    .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(accounts = n, "subscriptions ended"),
        Err(e) => tracing::error!(error = %e, "subscription sweep failed"),
    }
    if let Err(e) = crate::usage_history::prune(&st.db, chrono::Utc::now()).await {
        tracing::error!(error = %e, "pruning usage history failed");
    }
}
