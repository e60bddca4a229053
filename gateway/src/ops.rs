//! The operations listener (`metrics_addr`, never the public one): `/metrics` in Prometheus
//! text format from the default registry, `/healthz` (the process serves) and `/readyz` (the
//! account DB answers and the upstreams are configured).

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora_prometheus::prometheus::{self, Encoder, TextEncoder};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use stellar_common::Db;

pub struct OpsApp {
    pub db: Arc<OnceLock<Db>>,
    pub engine: SocketAddr,
    pub billing: SocketAddr,
}

fn reply(status: u16, ctype: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, ctype)
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(body)
        .unwrap_or_default()
}

/// A query that reads a real table (`SELECT 1` alone would not touch a SQLite file).
async fn db_answers(db: &Db) -> bool {
    stellar_common::with_db!(db, p => sqlx::query("SELECT id FROM change_feed ORDER BY id DESC LIMIT 1").fetch_optional(p).await.is_ok())
}

#[async_trait]
impl ServeHttp for OpsApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        match path.as_str() {
            "/metrics" => {
                let encoder = TextEncoder::new();
                let mut buf = Vec::new();
                if encoder.encode(&prometheus::gather(), &mut buf).is_err() {
                    return reply(500, "text/plain", b"encode failed\n".to_vec());
                }
                reply(200, encoder.format_type(), buf)
            }
            "/healthz" => reply(200, "application/json", br#"{"status":"ok"}"#.to_vec()),
            "/readyz" => {
                let db_ok = match self.db.get() {
                    Some(db) => tokio::time::timeout(Duration::from_secs(2), db_answers(db))
                        .await
                        .unwrap_or(false),
                    None => false,
                };
                let up_ok = self.engine.port() != 0 && self.billing.port() != 0;
                let body = serde_json::json!({"db": db_ok, "upstreams": up_ok})
                    .to_string()
                    .into_bytes();
                reply(
                    if db_ok && up_ok { 200 } else { 503 },
                    "application/json",
                    body,
                )
            }
            _ => reply(
                404,
                "application/json",
                br#"{"detail":"Not Found"}"#.to_vec(),
            ),
        }
    }
}
