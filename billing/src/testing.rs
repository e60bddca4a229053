//! Test support (unit tests only): a fresh migrated SQLite account DB in a temporary file, and
//! the service state around it, so handlers and the state machine run without sockets.

use crate::accounts::{self, Registered};
use crate::metrics::Metrics;
use crate::providers::Providers;
use crate::settings::Settings;
use crate::state::AppState;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use stellar_common::config::Config;
use stellar_common::db::DbOptions;
use stellar_common::Db;
use uuid::Uuid;

/// A migrated SQLite account DB; its files are removed on drop.
pub struct TempDb {
    pub db: Db,
    path: PathBuf,
}

impl TempDb {
    pub async fn new() -> TempDb {
        let path = std::env::temp_dir().join(format!("stellar-billing-{}.db", Uuid::new_v4()));
        let db = Db::connect(
            &format!("sqlite://{}", path.display()),
            &DbOptions::default(),
        )
        .await
        .expect("temp account DB");
        db.migrate().await.expect("migrations");
        TempDb { db, path }
    }

    /// A free account with its first key: `(user id, plaintext key)`.
    pub async fn register(&self, email: &str) -> (Uuid, String) {
        match accounts::register(&self.db, email, "free").await.unwrap() {
            Registered::Created { user_id, key, .. } => (user_id, key.plaintext),
            Registered::AlreadyExists => panic!("{email} is registered already"),
        }
    }

    pub async fn user(&self, email: &str) -> Uuid {
        self.register(email).await.0
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Billing's settings from the defaults plus `env` (no provider configured unless `env` says
/// so), with the repository's tier table.
pub fn settings(env: &[(&str, &str)]) -> Settings {
    let mut vars: BTreeMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    vars.entry("STELLAR_TIERS_FILE".into()).or_insert_with(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../config/tiers.toml").to_string()
    });
    let config = Config::from_parts(None, &vars).expect("config");
    Settings::from_config(&config).expect("settings")
}

/// The state the router runs on, over `db`.
pub fn state(db: &Db, settings: Settings) -> AppState {
    let settings = Arc::new(settings);
    let metrics = Arc::new(Metrics::new());
    let providers = Arc::new(Providers::new(
        settings.clone(),
        reqwest::Client::new(),
        db.clone(),
        metrics.clone(),
    ));
    AppState {
        db: db.clone(),
        limits: Arc::new(crate::identity::limits::MailLimits::new(
            settings.auth.mail_requests_per_ip_per_hour,
            settings.auth.mails_per_address_per_hour,
        )),
        settings,
        metrics,
        providers,
    }
}
