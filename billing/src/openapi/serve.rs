//! `GET /openapi.json` (the document, serialised once when the router is built) and `GET /docs`
//! (Swagger UI, embedded in the binary by `utoipa-swagger-ui`'s `vendored` feature: nothing is
//! fetched from another host at run time). Both are open to anyone, like the landing page.
//!
//! Swagger UI's `index.html` refers to its files relatively (`./swagger-ui.css`, `index.css`),
//! which would resolve outside `/docs/` for the page at `/docs`; so the page is answered with
//! those references made absolute (`/docs/…`), and the same page serves `/docs` and `/docs/`.
//! Its `swagger-initializer.js` holds the configuration: the document at `/openapi.json`, and no
//! validator badge (Swagger UI would otherwise send the document to validator.swagger.io).

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::sync::Arc;
use utoipa_swagger_ui::Config;

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";
/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/docs";

/// The routes of the document and of Swagger UI, for `public_url`'s document.
pub fn routes<S: Clone + Send + Sync + 'static>(public_url: &str) -> Router<S> {
    let json = Bytes::from(
        serde_json::to_vec(&super::document(public_url)).expect("the document serialises"),
    );
    let config = Arc::new(Config::new([OPENAPI_PATH]).validator_url("none"));
    let index = Bytes::from(index_html(&config));
    let page = move || {
        let index = index.clone();
        async move { html(index) }
    };
    Router::new()
        .route(
            OPENAPI_PATH,
            get(move || {
                let json = json.clone();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, "application/json"),
                            (header::CACHE_CONTROL, "no-cache"),
                        ],
                        json,
                    )
                }
            }),
        )
        .route(DOCS_PATH, get(page.clone()))
        .route("/docs/", get(page))
        .route(
            "/docs/{*file}",
            get(move |Path(file): Path<String>| {
                let config = config.clone();
                async move { file_response(&file, config) }
            }),
        )
}

/// Swagger UI's page with its relative references made absolute under `/docs/`.
fn index_html(config: &Arc<Config<'static>>) -> String {
    let page = utoipa_swagger_ui::serve("index.html", config.clone())
        .ok()
        .flatten()
        .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
        .unwrap_or_default();
    absolute_refs(&page)
}

/// `src="x"` and `href="x"` with a relative `x` become `/docs/x` (`./` dropped).
pub(crate) fn absolute_refs(page: &str) -> String {
    let mut out = String::with_capacity(page.len() + 64);
    let mut rest = page;
    while let Some((at, attr)) = ["src=\"", "href=\""]
        .iter()
        .filter_map(|a| rest.find(a).map(|i| (i, *a)))
        .min_by_key(|(i, _)| *i)
    {
        let start = at + attr.len();
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let value = &rest[..rest.find('"').unwrap_or(rest.len())];
        let is_relative = !(value.starts_with('/')
            || value.starts_with('#')
            || value.starts_with("data:")
            || value.contains("://"));
        if is_relative {
            out.push_str(DOCS_PATH);
            out.push('/');
            rest = rest.strip_prefix("./").unwrap_or(rest);
        }
    }
    out.push_str(rest);
    out
}

fn html(body: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// One of Swagger UI's files; anything else under `/docs/` is the JSON 404 of every unknown path.
fn file_response(file: &str, config: Arc<Config<'static>>) -> Response {
    if file == "index.html" {
        return html(Bytes::from(index_html(&config)));
    }
    match utoipa_swagger_ui::serve(file, config) {
        Ok(Some(f)) => {
            let mut r = (
                [(header::CACHE_CONTROL, "public, max-age=300")],
                f.bytes.into_owned(),
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&f.content_type) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            if f.gzpipped {
                r.headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            r
        }
        Ok(None) => ApiError::NotFound("Not found".into()).into_response(),
        Err(e) => ApiError::Internal(anyhow::anyhow!("swagger ui: {e}")).into_response(),
    }
}
