//! The one error type of billing, turned into HTTP in exactly one place: every error is JSON
//! `{"detail": "…"}`. Internal causes (SQL, provider answers) are logged, never sent.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// The challenge every 401 carries: an API key, as `Authorization: Bearer` (or `X-API-Key`).
pub const WWW_AUTHENTICATE: &str = r#"Bearer realm="stellar""#;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a request we cannot read (malformed JSON, bad webhook signature, …).
    #[error("{0}")]
    BadRequest(String),
    /// 401: missing, malformed, unknown or revoked API key.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 402: the provider declined the payment.
    #[error("{0}")]
    PaymentDeclined(String),
    /// 403: not allowed for this account (e.g. key limit of the tier).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 410: a link that was valid once (expired or already used).
    #[error("{0}")]
    Gone(String),
    /// 429: an abuse limit; the number is the seconds to wait (`Retry-After`).
    #[error("Too many requests: try again later")]
    TooManyRequests(u64),
    /// 422: well-formed but invalid input.
    #[error("{0}")]
    Unprocessable(String),
    /// 502: a payment provider answered with an error we cannot pass on.
    #[error("payment provider error: {0}")]
    Provider(String),
    /// 503: the feature is not configured, or a dependency is unreachable.
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::PaymentDeclined(_) => StatusCode::PAYMENT_REQUIRED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Provider(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Database(sqlx::Error::PoolTimedOut) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Database(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            ApiError::Database(e) => {
                tracing::error!(error = %e, "database error");
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    "Account database unavailable"
                } else {
                    "Internal error"
                }
                .to_string()
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                "Internal error".to_string()
            }
            ApiError::Provider(m) => {
                tracing::warn!(error = %m, "payment provider error");
                "Payment provider error".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = (status, Json(serde_json::json!({ "detail": detail }))).into_response();
        if let ApiError::TooManyRequests(secs) = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1: a 401 names the scheme that would work.
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(WWW_AUTHENTICATE),
            );
        }
        resp
    }
}
