//! What the gateway adds to every answer it gives or relays: how a caller authenticates, the
//! gateway's own errors, and the rate-limit headers. The gateway (pingora, no axum) does not
//! link utoipa, so its part of the public document is written here, next to the merge, from
//! its error table (`gateway/src/errors.rs`: statuses, bodies, problem types) and its limiter
//! (`gateway/src/limits.rs::headers`). The contract test (`tests/tests/e2e/contract.rs`)
//! checks the live gateway against it, so a drift on either side fails CI.
//!
//! The edit is done on the document's JSON form (once, at start): the gateway's part is a
//! handful of rules over every path, clearer as JSON than through the typed builder (and
//! utoipa cannot read back every schema it writes).

use serde_json::{json, Map, Value};

/// The problem types the gateway's RFC 9457 answers use (`gateway/src/errors.rs`).
const QUOTA_EXCEEDED_TYPE: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";
const MEMORY_LIMIT_TYPE: &str = "https://stellar-gate.dev/problems#memory-limit-exceeded";
const AGENT_LIMIT_TYPE: &str = "https://stellar-gate.dev/problems#agent-limit-exceeded";
const KEY_SCOPE_TYPE: &str = "https://stellar-gate.dev/problems#key-scope";

/// Adds the gateway's part to `doc` (the document's JSON form).
pub fn apply(doc: &mut Value) {
    let components = object(doc, "components");
    let schemas = object_in(components, "schemas");
    for (name, schema) in schemas_of_gateway() {
        schemas.insert(name.into(), schema);
    }
    let schemes = object_in(components, "securitySchemes");
    schemes.insert(
        "ApiKey".into(),
        json!({"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "An API key (`sk-…`). The gateway checks it; the engine never sees it."}),
    );
    schemes.insert(
        "Bearer".into(),
        json!({"type": "http", "scheme": "bearer",
               "description": "The same API key as `Authorization: Bearer sk-…`."}),
    );
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for (method, op) in item.iter_mut() {
            if !is_method(method) {
                continue;
            }
            let Some(op) = op.as_object_mut() else {
                continue;
            };
            if path.starts_with("/api/v1/") {
                engine_operation(path, method, op);
            } else {
                billing_operation(path, method, op);
            }
            add_gateway_failures(op);
        }
    }
}

/// A keyed engine route: the key, the caller's own space, the limiter and the gateway's refusals.
fn engine_operation(path: &str, method: &str, op: &mut Map<String, Value>) {
    // The gateway sets X-Stellar-User from the key and drops the client's: not a parameter here.
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        params.retain(|p| {
            !(p["in"] == "header"
                && p["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("x-stellar-user")))
        });
    }
    // Through the gateway the agent is checked (400 otherwise) and a key may be bound to one.
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        for p in params.iter_mut().filter(|p| {
            p["in"] == "header"
                && p["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("x-stellar-agent"))
        }) {
            p["description"] = json!(
                "The agent whose sub-space of your account is used: 1-64 characters of \
                 A-Z a-z 0-9 . _ : - (else 400). Absent: the account's default space, or the \
                 agent a key is bound to (a different one is 403, scope `agent`)."
            );
            p["schema"] = json!({"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"});
        }
    }
    let health = path == "/api/v1/health";
    op.insert(
        "security".into(),
        if health {
            // Without a key: the engine's health, no tenant data; with one: the caller's space.
            json!([{}, {"ApiKey": []}, {"Bearer": []}])
        } else {
            json!([{"ApiKey": []}, {"Bearer": []}])
        },
    );
    let responses = object_in(op, "responses");
    if !health {
        // Every answer that passed the limiter carries the policy's fields.
        for (status, r) in responses.iter_mut() {
            if status.starts_with('2') {
                let headers = object_in(r.as_object_mut().expect("response object"), "headers");
                headers.extend(rate_limit_headers(true));
            }
        }
        responses.insert("401".into(), unauthorized());
        responses.insert(
            "429".into(),
            problem_response(
                "The key's or the account's requests per minute are used up (`Retry-After` says when to retry).",
                "#/components/schemas/RateLimitProblem",
                {
                    let mut h = rate_limit_headers(true);
                    h.insert("Retry-After".into(), header("integer", "Seconds until a request is admitted again."));
                    h
                },
            ),
        );
        let mut refusals = vec![json!({"$ref": "#/components/schemas/KeyScopeProblem"})];
        if method == "post" && path == "/api/v1/store" {
            refusals.push(json!({"$ref": "#/components/schemas/MemoryLimitProblem"}));
            refusals.push(json!({"$ref": "#/components/schemas/AgentLimitProblem"}));
        }
        responses.insert(
            "403".into(),
            json!({
                "description": "Outside the key's scope (read-only, bound to another agent), or the plan's memory or agent limit reached (store).",
                "content": {"application/problem+json": {"schema": {"oneOf": refusals}}}
            }),
        );
    }
    merge_detail_response(
        responses,
        "400",
        "Invalid `X-Stellar-Agent`, or a request the gateway refuses to forward as sent.",
    );
    if op.contains_key("requestBody") {
        let responses = object_in(op, "responses");
        merge_detail_response(
            responses,
            "413",
            "The request body is larger than the gateway accepts.",
        );
    }
}

/// Billing's routes: the gateway forwards them as they are; the unauthenticated ones that start
/// something (sign-up, checkout, Toss confirmation) share a per-IP bucket.
fn billing_operation(path: &str, method: &str, op: &mut Map<String, Value>) {
    let checkout = path == "/billing/{provider}/checkout";
    let ip_limited = match method {
        "post" => path == "/auth/register" || path == "/billing/toss/confirm" || checkout,
        "get" => checkout,
        _ => false,
    };
    if ip_limited {
        let mut h = Map::new();
        h.insert(
            "Retry-After".into(),
            header("integer", "Seconds until a request is admitted again."),
        );
        let ours = problem_response(
            "Too many unauthenticated requests from this address (the gateway's per-IP bucket), \
             or billing's own limit (`{\"detail\"}`).",
            "#/components/schemas/RateLimitProblem",
            h,
        );
        let responses = object_in(op, "responses");
        match responses.get_mut("429").and_then(Value::as_object_mut) {
            // Billing's own 429 (its mail limits) stays documented beside the gateway's.
            Some(theirs) => {
                let content = object_in(theirs, "content");
                content.insert(
                    "application/problem+json".into(),
                    ours["content"]["application/problem+json"].clone(),
                );
                theirs.insert("description".into(), ours["description"].clone());
            }
            None => {
                responses.insert("429".into(), ours);
            }
        }
    }
}

/// 502, 503 and 504: the upstream is down, the account DB is out of reach, the upstream is slow.
fn add_gateway_failures(op: &mut Map<String, Value>) {
    let responses = object_in(op, "responses");
    for (status, why) in [
        (
            "502",
            "The upstream could not be reached (answered by the gateway).",
        ),
        (
            "503",
            "The account service or the quota store is unreachable; retry shortly.",
        ),
        (
            "504",
            "The upstream did not answer in time (answered by the gateway).",
        ),
    ] {
        merge_detail_response(responses, status, why);
    }
}

/// Adds a `{"detail": string}` answer for `status`, or, where the upstream documents its own
/// answer for it, accepts either.
fn merge_detail_response(responses: &mut Map<String, Value>, status: &str, why: &str) {
    let ours = json!({"$ref": "#/components/schemas/GatewayError"});
    match responses.get_mut(status) {
        None => {
            responses.insert(
                status.into(),
                json!({"description": why, "content": {"application/json": {"schema": ours}}}),
            );
        }
        Some(existing) => {
            let content = object_in(existing.as_object_mut().expect("response"), "content");
            let media = content
                .entry("application/json")
                .or_insert_with(|| json!({"schema": {"anyOf": []}}));
            let schema = media
                .as_object_mut()
                .expect("media type")
                .entry("schema")
                .or_insert(json!({"anyOf": []}));
            let any = match schema.get_mut("anyOf").and_then(Value::as_array_mut) {
                Some(list) => list,
                None => {
                    *schema = json!({"anyOf": [schema.take()]});
                    schema["anyOf"].as_array_mut().expect("just made")
                }
            };
            if !any.contains(&ours) {
                any.push(ours);
            }
        }
    }
}

fn unauthorized() -> Value {
    json!({
        "description": "No API key, a malformed or unknown one, or an expired scoped key.",
        "headers": {"WWW-Authenticate": header("string", "`Bearer realm=\"stellar\"` (not on an expired key).")},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/GatewayError"}}}
    })
}

fn problem_response(description: &str, schema: &str, headers: Map<String, Value>) -> Value {
    json!({
        "description": description,
        "headers": headers,
        "content": {"application/problem+json": {"schema": {"$ref": schema}}}
    })
}

/// The limiter's fields (`gateway/src/limits.rs::headers`): the legacy `X-RateLimit-*` trio and
/// draft-ietf-httpapi-ratelimit-headers' `RateLimit` and `RateLimit-Policy`.
fn rate_limit_headers(required: bool) -> Map<String, Value> {
    let mut h = Map::new();
    for (name, ty, what) in [
        (
            "X-RateLimit-Limit",
            "integer",
            "Requests per minute of the policy that applies.",
        ),
        ("X-RateLimit-Remaining", "integer", "Requests left now."),
        (
            "X-RateLimit-Reset",
            "integer",
            "Unix time at which the bucket is full again.",
        ),
        (
            "RateLimit",
            "string",
            "`\"<policy>\";r=<remaining>;t=<seconds to reset>`.",
        ),
        (
            "RateLimit-Policy",
            "string",
            "`\"<policy>\";q=<quota>;w=<window seconds>`.",
        ),
    ] {
        let mut v = header(ty, what);
        v["required"] = json!(required);
        h.insert(name.into(), v);
    }
    h
}

fn header(ty: &str, description: &str) -> Value {
    json!({"description": description, "schema": {"type": ty}})
}

/// The bodies of the gateway's own answers.
fn schemas_of_gateway() -> Vec<(&'static str, Value)> {
    let problem = |ty: &str, status: u16, extra: Value| {
        let mut properties = json!({
            "type": {"const": ty},
            "title": {"type": "string"},
            "status": {"const": status},
            "detail": {"type": "string"},
        });
        // Every member the gateway writes is always there (`next_tier` as null at the top plan).
        let mut required: Vec<String> = ["type", "title", "status", "detail"]
            .map(String::from)
            .into();
        if let Value::Object(more) = extra {
            for (k, v) in more {
                required.push(k.clone());
                properties[&k] = v;
            }
        }
        json!({"type": "object", "required": required, "properties": properties})
    };
    let limit_fields = json!({
        "used": {"type": "integer"},
        "limit": {"type": "integer"},
        "tier": {"type": "string"},
        "next_tier": {"type": ["string", "null"]},
        "violated-policies": {"type": "array", "items": {"type": "string"}},
    });
    vec![
        (
            "GatewayError",
            json!({"type": "object", "required": ["detail"],
                   "properties": {"detail": {"type": "string"}},
                   "description": "An answer the gateway gives itself, in the engine's error shape."}),
        ),
        (
            "RateLimitProblem",
            problem(
                QUOTA_EXCEEDED_TYPE,
                429,
                json!({"violated-policies": {"type": "array", "items": {"type": "string"}}}),
            ),
        ),
        (
            "MemoryLimitProblem",
            problem(MEMORY_LIMIT_TYPE, 403, limit_fields.clone()),
        ),
        (
            "AgentLimitProblem",
            problem(AGENT_LIMIT_TYPE, 403, limit_fields),
        ),
        (
            "KeyScopeProblem",
            problem(
                KEY_SCOPE_TYPE,
                403,
                json!({"scope": {"type": "string", "enum": ["read_only", "agent"]}}),
            ),
        ),
    ]
}

fn is_method(k: &str) -> bool {
    matches!(
        k,
        "get" | "put" | "post" | "delete" | "patch" | "head" | "options" | "trace"
    )
}

/// `v[key]` as an object, created if missing.
fn object<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    object_in(v.as_object_mut().expect("an object"), key)
}

fn object_in<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let e = m.entry(key).or_insert_with(|| json!({}));
    if !e.is_object() {
        *e = json!({});
    }
    e.as_object_mut().expect("just made an object")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        json!({
            "openapi": "3.1.0",
            "info": {"title": "t", "version": "1"},
            "paths": {
                "/api/v1/store": {"post": {
                    "parameters": [
                        {"name": "X-Stellar-User", "in": "header", "required": false, "schema": {"type": "string"}},
                        {"name": "X-Stellar-Agent", "in": "header", "required": false, "schema": {"type": "string"}}
                    ],
                    "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}},
                    "responses": {
                        "200": {"description": "stored", "content": {"application/json": {"schema": {"type": "object"}}}},
                        "400": {"description": "engine", "content": {"application/json": {"schema": {"type": "object", "required": ["detail"]}}}}
                    }
                }},
                "/api/v1/health": {"get": {"responses": {"200": {"description": "ok"}}}},
                "/auth/register": {"post": {"responses": {"202": {"description": "mailed"}}}},
                "/auth/usage": {"get": {"responses": {"200": {"description": "usage"}}}}
            }
        })
    }

    #[test]
    fn keyed_engine_routes_get_the_key_the_limiter_and_the_refusals() {
        let mut d = sample();
        apply(&mut d);
        let store = &d["paths"]["/api/v1/store"]["post"];
        let params = store["parameters"].as_array().unwrap();
        assert_eq!(
            params.len(),
            1,
            "X-Stellar-User is the gateway's, not the caller's"
        );
        assert_eq!(params[0]["name"], "X-Stellar-Agent");
        assert_eq!(params[0]["schema"]["pattern"], "^[A-Za-z0-9._:-]{1,64}$");
        assert_eq!(store["security"], json!([{"ApiKey": []}, {"Bearer": []}]));
        let r = &store["responses"];
        assert_eq!(r["200"]["headers"]["RateLimit"]["required"], true);
        assert!(r["429"]["headers"]["Retry-After"].is_object());
        assert_eq!(
            r["403"]["content"]["application/problem+json"]["schema"]["oneOf"]
                .as_array()
                .unwrap()
                .len(),
            3
        );
        assert!(r["413"].is_object(), "a body route can be too large");
        assert!(r["401"]["headers"]["WWW-Authenticate"].is_object());
        // The engine's own 400 stays valid, the gateway's is accepted beside it.
        let any = r["400"]["content"]["application/json"]["schema"]["anyOf"]
            .as_array()
            .unwrap();
        assert_eq!(any.len(), 2);
        assert_eq!(any[0]["required"], json!(["detail"]));
        for s in ["502", "503", "504"] {
            assert!(r[s].is_object(), "{s}");
        }
    }

    #[test]
    fn health_takes_a_key_or_none_and_billing_routes_keep_their_own_auth() {
        let mut d = sample();
        apply(&mut d);
        let health = &d["paths"]["/api/v1/health"]["get"];
        assert_eq!(health["security"][0], json!({}));
        assert!(
            health["responses"]["401"].is_null(),
            "health never needs a key"
        );
        assert!(health["responses"]["429"].is_null());
        let register = &d["paths"]["/auth/register"]["post"];
        assert!(register["responses"]["429"].is_object(), "per-IP bucket");
        assert!(register["security"].is_null());
        let usage = &d["paths"]["/auth/usage"]["get"];
        assert!(usage["responses"]["429"].is_null());
        assert!(usage["responses"]["502"].is_object());
        assert!(d["components"]["securitySchemes"]["ApiKey"].is_object());
        assert_eq!(
            d["components"]["schemas"]["MemoryLimitProblem"]["properties"]["status"]["const"],
            403
        );
    }
}
