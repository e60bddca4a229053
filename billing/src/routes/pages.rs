//! The landing page, the dashboard, the page behind mailed links and their static files, served
//! from `billing.landing_dir`.

use crate::error::{ApiError, ApiResult};
use crate::openapi::schemas as s;
use crate::state::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::path::{Component, PathBuf};

fn content_type(path: &std::path::Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("txt") => "text/plain; charset=utf-8",
        Some("webmanifest") => "application/manifest+json",
        _ => "application/octet-stream",
    }
}

async fn serve(st: &AppState, rel: PathBuf) -> ApiResult<Response> {
    let path = st.settings.billing.landing_dir.join(rel);
    match tokio::fs::read(&path).await {
        Ok(bytes) => {
            let cache = if path.extension().is_some_and(|e| e == "html") {
                "no-cache"
            } else {
                "public, max-age=300"
            };
            Ok((
                [
                    (header::CONTENT_TYPE, content_type(&path)),
                    (header::CACHE_CONTROL, cache),
                ],
                bytes,
            )
                .into_response())
        }
        Err(_) => Err(ApiError::NotFound("Not found".into())),
    }
}

#[utoipa::path(get, path = "/", tag = "Pages",
    responses((status = 200, description = "The landing page.", body = String, content_type = "text/html"), (status = 404, description = "The file is missing from `billing.landing_dir`.", body = s::ApiErrorBody)))]
pub async fn index(State(st): State<AppState>) -> ApiResult<Response> {
    serve(&st, PathBuf::from("index.html")).await
}

#[utoipa::path(get, path = "/dashboard", tag = "Pages",
    responses((status = 200, description = "The dashboard (signed in by the session or a key kept in the tab).", body = String, content_type = "text/html"), (status = 404, description = "The file is missing from `billing.landing_dir`.", body = s::ApiErrorBody)))]
pub async fn dashboard(State(st): State<AppState>) -> ApiResult<Response> {
    serve(&st, PathBuf::from("dashboard.html")).await
}

/// `GET /auth/link`: the page a mailed link opens (`#token=…` in the fragment; its script posts
/// the token to `POST /auth/link`). It may show an account's first key, so it is never cached,
/// and its address is never sent on as a referrer.
#[utoipa::path(get, path = "/auth/link", tag = "Pages",
    responses((status = 200, description = "The page a mailed link opens (`#token=…`); its script posts the token to `POST /auth/link`. `Cache-Control: no-store`, `Referrer-Policy: no-referrer`.",
        body = String, content_type = "text/html"), (status = 404, description = "The file is missing from `billing.landing_dir`.", body = s::ApiErrorBody)))]
pub async fn link(State(st): State<AppState>) -> ApiResult<Response> {
    let mut res = serve(&st, PathBuf::from("link.html")).await?;
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Ok(res)
}

/// `/static/{path}`: only plain relative components, so nothing outside `landing/static` is
/// reachable (no `..`, no absolute paths, no hidden files).
#[utoipa::path(get, path = "/static/{path}", tag = "Pages",
    params(("path" = String, Path, description = "A file under `landing/static` (no `..`, no hidden files).")),
    responses((status = 200, description = "The file (CSS, JavaScript, images, fonts), with its content type.", body = String, content_type = "*/*"),
        (status = 404, description = "No such file, or a path outside `landing/static`.", body = s::ApiErrorBody)))]
pub async fn static_file(
    State(st): State<AppState>,
    Path(path): Path<String>,
) -> ApiResult<Response> {
    let mut rel = PathBuf::from("static");
    for c in std::path::Path::new(&path).components() {
        match c {
            Component::Normal(s) if !s.to_string_lossy().starts_with('.') => rel.push(s),
            _ => return Err(ApiError::NotFound("Not found".into())),
        }
    }
    serve(&st, rel).await
}
