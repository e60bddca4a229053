//! Shared handles of the running service.

use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::settings::Settings;
use std::sync::Arc;
use stellar_common::Db;

#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    pub providers: Arc<Providers>,
    /// Abuse limits on requests that send mail.
    pub limits: Arc<crate::identity::limits::MailLimits>,
}
