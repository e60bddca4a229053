//! The public OpenAPI 3.1 document: billing's routes (generated from its handlers and types with
//! `utoipa`), the engine's `/api/v1` routes (`stellar_engine::http::openapi`), and what the
//! gateway adds in front of both (`gateway`: the security scheme, its own errors, the rate-limit
//! headers). Served at `/openapi.json`, browsable at `/docs`, both through the gateway (`serve`).
//!
//! Billing's operations are written on the handlers (`#[utoipa::path]` in `routes/`), their
//! answers in `schemas` (schema-only types for the `json!()` answers) and the request types
//! where they are decoded. What every operation of a kind has in common is added here by
//! [`conventions`], from the operation's security requirement and body, rather than repeated
//! on each handler:
//! - an operation that takes a key or the session (security `ApiKey`/`Bearer`/`Session`):
//!   401 with `WWW-Authenticate` (`Auth` in `extract`);
//! - one that takes the session and is not a GET: the `X-CSRF-Token` header and its 403 (and a
//!   scoped key's 403);
//! - one with a body: 400 (malformed), 413 (over the body limit);
//! - one that reads the account DB (every operation with security or a body): 500, and 503 when
//!   the account DB is out of reach.

pub mod gateway;
pub mod schemas;
pub mod serve;

use serde_json::{json, Map, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;

/// Billing's own part: every JSON route of its router and, briefly, its pages.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Stellar Gate API",
        description = "The whole public API of Stellar Gate, as served by the gateway: the Stellar \
Memory REST API (`/api/v1`, forwarded to the engine with the caller's API key), and accounts, keys, \
people, plans, checkout, webhooks and pages (billing). Every error billing answers is JSON \
`{\"detail\": \"…\"}`; the gateway's own refusals are described on each operation. \
See docs/billing-api.md and docs/engine-api.md.",
    ),
    paths(
        crate::routes::health,
        crate::routes::auth::register,
        crate::routes::auth::sign_in,
        crate::routes::auth::open_link,
        crate::routes::auth::session,
        crate::routes::auth::switch_account,
        crate::routes::auth::sign_out,
        crate::routes::auth::list_sessions,
        crate::routes::auth::revoke_session,
        crate::routes::members::list,
        crate::routes::members::invite,
        crate::routes::members::change_role,
        crate::routes::members::remove,
        crate::routes::members::cancel_invitation,
        crate::routes::members::audit_log,
        crate::routes::account::list_keys,
        crate::routes::account::create_key,
        crate::routes::account::update_key,
        crate::routes::account::revoke_key,
        crate::routes::account::rotate_key,
        crate::routes::account::usage,
        crate::routes::account::usage_history,
        crate::routes::data::export,
        crate::routes::data::delete_account,
        crate::routes::webhooks_out::list,
        crate::routes::webhooks_out::create,
        crate::routes::webhooks_out::delete,
        crate::routes::webhooks_out::rotate_secret,
        crate::routes::webhooks_out::deliveries,
        crate::routes::webhooks_out::resend,
        crate::routes::webhooks_out::get_alerts,
        crate::routes::webhooks_out::put_alerts,
        crate::routes::checkout::tiers,
        crate::routes::checkout::checkout_json,
        crate::routes::checkout::checkout_redirect,
        crate::routes::checkout::portal,
        crate::routes::checkout::cancel,
        crate::routes::toss::confirm,
        crate::routes::toss::page,
        crate::routes::toss::success,
        crate::routes::toss::fail,
        crate::routes::webhooks::webhook,
        crate::routes::pages::index,
        crate::routes::pages::dashboard,
        crate::routes::pages::link,
        crate::routes::pages::static_file,
    ),
    components(schemas(schemas::ApiErrorBody)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "Accounts and keys", description = "Registration, API keys (scoped, rotated), usage."),
        (name = "People", description = "Verified sign-up, sign-in links, sessions, members and roles, the audit log."),
        (name = "Webhooks and alerts", description = "The account's own webhook endpoints, their deliveries, alert thresholds."),
        (name = "Your data", description = "Export every memory; delete the account."),
        (name = "Plans and checkout", description = "Plans, checkout with Lemon Squeezy, Stripe or TossPayments, portal, cancel."),
        (name = "Provider webhooks", description = "The payment providers' webhooks to billing (verified over the raw body)."),
        (name = "Pages", description = "HTML pages and their static files (landing, dashboard, the link page, Toss's card page)."),
        (name = "Operations", description = "Health."),
    )
)]
struct BillingApi;

/// The security schemes billing's operations name: a key in `X-API-Key`, the same key as a
/// bearer token, and the dashboard's session cookie (`identity::sessions::COOKIE`).
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "ApiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "An API key (`sk-stellar-…`).",
            ))),
        );
        components.add_security_scheme(
            "Bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The same API key as `Authorization: Bearer sk-stellar-…`.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "Session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                crate::identity::sessions::COOKIE,
                "The dashboard's session (set by `POST /auth/link`). A request authenticated by it \
                 with a method other than GET/HEAD must also send `X-CSRF-Token`. A request that \
                 carries a key is authenticated by the key alone.",
            ))),
        );
    }
}

/// The whole public API as one document, in its JSON form (what `/openapi.json` serves);
/// `public_url` (the gateway's public address) is its one server.
///
/// `conventions` are applied to the JSON form, last, and the result stays JSON: utoipa cannot
/// read back every schema it writes (`{}`, the schema of any value, is one), so a round trip
/// through the typed document could drop them.
pub fn document(public_url: &str) -> Value {
    let mut doc = BillingApi::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.servers = Some(vec![utoipa::openapi::Server::new(
        public_url.trim_end_matches('/'),
    )]);
    doc.merge(stellar_engine::http::openapi::document());
    let mut v = serde_json::to_value(&doc).expect("the document serialises");
    conventions(&mut v);
    gateway::apply(&mut v);
    v
}

/// Adds what every billing operation of a kind has in common (see the module's doc).
fn conventions(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if path.starts_with("/api/v1/") {
            continue;
        }
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            let is_method = matches!(
                method.as_str(),
                "get" | "put" | "post" | "delete" | "patch" | "head" | "options" | "trace"
            );
            if let Some(op) = op.as_object_mut().filter(|_| is_method) {
                operation(method, op);
            }
        }
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}
    })
}

fn operation(method: &str, op: &mut Map<String, Value>) {
    let schemes: Vec<String> = op
        .get("security")
        .and_then(Value::as_array)
        .map(|alternatives| {
            alternatives
                .iter()
                .filter_map(Value::as_object)
                .flat_map(|o| o.keys().cloned())
                .collect()
        })
        .unwrap_or_default();
    let keyed = schemes.iter().any(|s| s == "ApiKey" || s == "Session");
    let session = schemes.iter().any(|s| s == "Session");
    let changes = !matches!(method, "get" | "head");
    let body = op.contains_key("requestBody");
    if session && changes {
        let params = op
            .entry("parameters")
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .expect("parameters is an array");
        params.push(json!({
            "name": "X-CSRF-Token",
            "in": "header",
            "required": false,
            "description": "The session's CSRF token (`csrf_token` of `POST /auth/link` or `GET /auth/session`): \
                            required when the request is authenticated by the session cookie, else 403.",
            "schema": {"type": "string"}
        }));
    }
    let responses = op
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("responses is an object");
    // A status the handler documents already keeps its description, extended with this cause.
    let mut add = |status: &str, r: Value| match responses.get_mut(status) {
        None => {
            responses.insert(status.to_string(), r);
        }
        Some(existing) => {
            let more = r["description"].as_str().unwrap_or_default();
            let more = more[..1].to_lowercase() + &more[1..];
            if let Some(d) = existing.get_mut("description") {
                *d = json!(format!("{} Also: {more}", d.as_str().unwrap_or_default()));
            }
        }
    };
    if keyed {
        let mut r = error_response(
            "No API key or session, a malformed, unknown, revoked or expired key, or an ended session.",
        );
        r["headers"] = json!({"WWW-Authenticate": {
            "description": "`Bearer realm=\"stellar\"`.",
            "required": true,
            "schema": {"type": "string"}
        }});
        add("401", r);
        if changes {
            add(
                "403",
                error_response(
                    "A scoped key (it may only read the account), or a cookie-authenticated request without the right CSRF token.",
                ),
            );
        }
    }
    if body {
        add("400", error_response("The body is not well-formed JSON."));
        add(
            "413",
            error_response("The body is larger than billing accepts."),
        );
    }
    if keyed || body {
        add(
            "500",
            error_response("Internal error (logged, never sent)."),
        );
        add(
            "503",
            error_response("The account database is out of reach, or a dependency is unavailable."),
        );
    }
}

#[cfg(test)]
mod tests;
