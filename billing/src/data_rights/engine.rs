//! The memory engine over HTTP, as one account: every request carries `X-Stellar-User` (the
//! account id), `X-Stellar-Agent` for a named agent (none for the default space) and
//! `X-API-Key` when `billing.engine_api_key` (or `gateway.upstream_api_key`) is set, exactly
//! what the gateway sends, over one pooled client (`Settings::engine_http`) that trusts
//! `billing.engine_ca_file` besides the web PKI roots for an `https://` engine. Only the calls
//! of docs/engine-api.md are used, so any engine that speaks that API works.

use crate::error::ApiError;
use crate::settings::Settings;
use reqwest::{Client, Method, RequestBuilder, Url};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Why a call to the engine failed. The details go to the log only: they name internal
/// addresses, so customers get a generic message.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the memory engine is unreachable ({what}): {detail}")]
    Unreachable { what: &'static str, detail: String },
    #[error("the memory engine answered {status} to {what}")]
    Status { what: &'static str, status: u16 },
    #[error("the memory engine's answer to {what} is not the documented shape: {detail}")]
    Malformed { what: &'static str, detail: String },
    /// The engine answers, but the work does not converge (memories it does not forget, more
    /// memories at one instant than a timeline page can hold).
    #[error("{0}")]
    Stuck(String),
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        tracing::warn!(error = %e, "memory engine call failed");
        ApiError::Unavailable("The memory engine is unavailable: try again later".into())
    }
}

/// The engine, as seen by one account.
#[derive(Clone)]
pub struct Engine {
    http: Client,
    base: Url,
    api_key: String,
    user: Uuid,
}

impl Engine {
    /// The configured engine (`billing.engine_url`), acting as `user`.
    pub fn for_account(settings: &Settings, user: Uuid) -> Result<Engine, ApiError> {
        let base = Url::parse(&settings.billing.engine_url)
            .map_err(|e| anyhow::anyhow!("billing.engine_url: {e}"))?;
        Ok(Engine::new(
            settings.engine_http.clone(),
            base,
            settings.billing.engine_api_key.expose(),
            user,
        ))
    }

    /// `http` is billing's engine client (`Settings::engine_http`: pooled, trusting
    /// `billing.engine_ca_file`).
    pub fn new(http: Client, base: Url, api_key: &str, user: Uuid) -> Engine {
        Engine {
            http,
            base,
            api_key: api_key.trim().to_string(),
            user,
        }
    }

    /// `base` + `/api/v1/` + `path` (each segment percent-encoded).
    fn url(&self, path: &[&str]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut s) = u.path_segments_mut() {
            s.pop_if_empty().extend(["api", "v1"]).extend(path);
        }
        u
    }

    fn request(&self, method: Method, path: &[&str], agent: Option<&str>) -> RequestBuilder {
        let mut r = self
            .http
            .request(method, self.url(path))
            .header("X-Stellar-User", self.user.to_string())
            .header("X-Request-Id", format!("billing-data-{}", Uuid::new_v4()));
        if let Some(a) = agent {
            r = r.header("X-Stellar-Agent", a);
        }
        if !self.api_key.is_empty() {
            r = r.header("X-API-Key", &self.api_key);
        }
        r
    }

    async fn send(
        &self,
        what: &'static str,
        r: RequestBuilder,
    ) -> Result<reqwest::Response, EngineError> {
        r.send().await.map_err(|e| EngineError::Unreachable {
            what,
            detail: e.to_string(),
        })
    }

    async fn json(&self, what: &'static str, r: RequestBuilder) -> Result<Value, EngineError> {
        let resp = self.send(what, r).await?;
        let status = resp.status();
        if !status.is_success() {
            return Err(EngineError::Status {
                what,
                status: status.as_u16(),
            });
        }
        resp.json::<Value>()
            .await
            .map_err(|e| EngineError::Malformed {
                what,
                detail: e.to_string(),
            })
    }

    /// `GET /api/v1/timeline?start=&limit=`: memories in creation order, full content.
    pub async fn timeline(
        &self,
        agent: Option<&str>,
        start: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Map<String, Value>>, EngineError> {
        const WHAT: &str = "GET /api/v1/timeline";
        let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
        if let Some(s) = start {
            q.push(("start", s.to_string()));
        }
        let v = self
            .json(
                WHAT,
                self.request(Method::GET, &["timeline"], agent).query(&q),
            )
            .await?;
        let Value::Array(items) = v else {
            return Err(malformed(WHAT, "not an array"));
        };
        items
            .into_iter()
            .map(|i| match i {
                Value::Object(m) => Ok(m),
                _ => Err(malformed(WHAT, "an item is not an object")),
            })
            .collect()
    }

    /// `GET /api/v1/memories?limit=&offset=0`: the ids of up to `limit` memories.
    pub async fn list_ids(
        &self,
        agent: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, EngineError> {
        const WHAT: &str = "GET /api/v1/memories";
        let v = self
            .json(
                WHAT,
                self.request(Method::GET, &["memories"], agent)
                    .query(&[("limit", limit.to_string()), ("offset", "0".into())]),
            )
            .await?;
        let items = v["items"]
            .as_array()
            .ok_or_else(|| malformed(WHAT, "no items array"))?;
        items
            .iter()
            .map(|i| id_of(&i["id"]).ok_or_else(|| malformed(WHAT, "an item has no id")))
            .collect()
    }

    /// `DELETE /api/v1/forget/{id}`: true when removed, false when the engine no longer had it
    /// (404: forgotten meanwhile, which is what was wanted).
    pub async fn forget(&self, agent: Option<&str>, id: &str) -> Result<bool, EngineError> {
        const WHAT: &str = "DELETE /api/v1/forget/{id}";
        let resp = self
            .send(WHAT, self.request(Method::DELETE, &["forget", id], agent))
            .await?;
        match resp.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            status => Err(EngineError::Status { what: WHAT, status }),
        }
    }

    /// `GET /api/v1/stats`: `total_memories` of the agent's space.
    pub async fn count(&self, agent: Option<&str>) -> Result<u64, EngineError> {
        const WHAT: &str = "GET /api/v1/stats";
        let v = self
            .json(WHAT, self.request(Method::GET, &["stats"], agent))
            .await?;
        v["total_memories"]
            .as_u64()
            .ok_or_else(|| malformed(WHAT, "no total_memories"))
    }
}

fn malformed(what: &'static str, detail: &str) -> EngineError {
    EngineError::Malformed {
        what,
        detail: detail.into(),
    }
}

/// A memory id as text (ids are UUID strings; a number is accepted and written as text).
pub fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
