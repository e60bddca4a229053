//! `GET /api/v1/events`: Server-Sent Events for one tenant's changes, with a heartbeat when idle.
//!
//! The frames are written by hand (`data: {json}\n\n`) rather than with axum's `Sse` so the
//! heartbeat is a data frame exactly like the original's (`{"event": "heartbeat"}`), not an SSE
//! comment, and the stream ends when the server shuts down instead of holding it open.

use super::{tenant, AppState};
use crate::engine::Event;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use tokio::sync::broadcast::error::RecvError;

fn frame(json: &str) -> Bytes {
    Bytes::from(format!("data: {json}\n\n"))
}

#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(super::schemas::TenantHeaders),
    responses((status = 200, description = "Server-Sent Events for the tenant's changes: `data: <EventFrame JSON>` frames separated by a blank line, a heartbeat frame when idle; the stream ends when the server shuts down.",
        content_type = "text/event-stream", body = String,
        headers(("Cache-Control" = String, description = "`no-cache`")))))]
pub async fn events(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let rx = state.engine.subscribe(&tenant(&headers));
    let heartbeat = state.heartbeat;
    let stream = futures::stream::unfold(
        (rx, state.shutdown.clone()),
        move |(mut rx, mut shutdown)| async move {
            if *shutdown.borrow() {
                return None;
            }
            let next = loop {
                tokio::select! {
                    // Sender dropped or shutdown flagged: either way, end the stream.
                    _ = shutdown.changed() => return None,
                    r = tokio::time::timeout(heartbeat, rx.recv()) => match r {
                        Err(_) => break frame(r#"{"event":"heartbeat"}"#),
                        Ok(Ok(ev)) => break frame(&serde_json::to_string::<Event>(&ev).expect("event serialises")),
                        // A slow reader missed some events; carry on with the next ones.
                        Ok(Err(RecvError::Lagged(_))) => continue,
                        Ok(Err(RecvError::Closed)) => return None,
                    },
                }
            };
            Some((Ok::<_, Infallible>(next), (rx, shutdown)))
        },
    );
    let mut resp = Body::from_stream(stream).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
