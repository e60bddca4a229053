//! Checks live answers against the OpenAPI 3.1 document the services serve (`/openapi.json`):
//! the status must be one the operation documents, the media type one documented for that
//! status, the JSON body valid against its schema (JSON Schema 2020-12, the document's
//! components resolving `$ref`s), every header documented as required present. Every check is
//! recorded, so a test can then ask which operations, and which of their statuses, were never
//! exercised.

use serde_json::{json, Value};
use std::collections::BTreeSet;

/// The document and what has been checked against it.
pub struct Contract {
    doc: Value,
    /// (method in lower case, path template, status) of every answer checked.
    seen: BTreeSet<(String, String, String)>,
}

/// One answer, as received.
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The answer's status and head, with an empty body (for a stream that never ends).
    pub fn head(r: &reqwest::Response) -> Answer {
        Answer {
            status: r.status().as_u16(),
            content_type: r
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap_or("").to_string()),
            headers: r
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    /// The whole answer, body included.
    pub async fn read(r: reqwest::Response) -> Answer {
        let mut a = Answer::head(&r);
        a.body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        a
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Contract {
    pub fn new(doc: Value) -> Contract {
        Contract {
            doc,
            seen: BTreeSet::new(),
        }
    }

    pub fn doc(&self) -> &Value {
        &self.doc
    }

    /// Every (method, path template) the document describes.
    pub fn operations(&self) -> Vec<(String, String)> {
        let mut ops = Vec::new();
        if let Some(paths) = self.doc["paths"].as_object() {
            for (path, item) in paths {
                for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
                    if item.get(method).is_some() {
                        ops.push((method.to_string(), path.clone()));
                    }
                }
            }
        }
        ops
    }

    /// Checks `a`, the answer to `method template`; returns every way it differs from the
    /// document (empty: it conforms) and records it as seen.
    pub fn check(&mut self, method: &str, template: &str, a: &Answer) -> Vec<String> {
        let method = method.to_ascii_lowercase();
        let op = &self.doc["paths"][template][&method];
        if op.is_null() {
            return vec![format!("{method} {template} is not in the document")];
        }
        let status = a.status.to_string();
        self.seen
            .insert((method.clone(), template.to_string(), status.clone()));
        let responses = &op["responses"];
        let Some(resp) = responses
            .get(&status)
            .or_else(|| responses.get(format!("{}XX", &status[..1])))
            .or_else(|| responses.get("default"))
        else {
            return vec![format!(
                "{method} {template}: status {status} is not documented (documented: {:?}); body {}",
                responses.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()),
                String::from_utf8_lossy(&a.body)
            )];
        };
        let resp = self.resolve(resp).clone();
        let mut problems = Vec::new();
        if let Some(headers) = resp["headers"].as_object() {
            for (name, h) in headers {
                let h = self.resolve(h);
                if h["required"] == true
                    && !a.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
                {
                    problems.push(format!(
                        "{method} {template} {status}: required header {name} missing"
                    ));
                }
            }
        }
        let Some(content) = resp["content"].as_object().filter(|c| !c.is_empty()) else {
            if !a.body.is_empty() && a.status != 204 {
                // A body the document says nothing about is only a problem if it is JSON that
                // claims to be described; an undocumented body is reported.
                problems.push(format!(
                    "{method} {template} {status}: a body ({} bytes) where the document has none",
                    a.body.len()
                ));
            }
            return problems;
        };
        let got = a
            .content_type
            .as_deref()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let Some((_, media)) = content.iter().find(|(k, _)| media_matches(k, &got)) else {
            problems.push(format!(
                "{method} {template} {status}: content type {got:?} not among {:?}",
                content.keys().collect::<Vec<_>>()
            ));
            return problems;
        };
        if got.ends_with("ndjson") {
            // A stream of JSON lines: each line is one instance of the schema.
            if let Some(schema) = media.get("schema") {
                for line in a.body.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    match serde_json::from_slice::<Value>(line) {
                        Err(e) => problems.push(format!(
                            "{method} {template} {status}: a line is not JSON: {e}"
                        )),
                        Ok(v) => {
                            for e in self.validate(schema, &v) {
                                problems
                                    .push(format!("{method} {template} {status}: {e}; line {v}"));
                            }
                        }
                    }
                }
            }
        } else if got.ends_with("json") {
            if let Some(schema) = media.get("schema") {
                match serde_json::from_slice::<Value>(&a.body) {
                    Err(e) => problems.push(format!("{method} {template} {status}: not JSON: {e}")),
                    Ok(body) => {
                        for e in self.validate(schema, &body) {
                            problems
                                .push(format!("{method} {template} {status}: {e}; body {body}"));
                        }
                    }
                }
            }
        }
        problems
    }

    /// The errors of `value` against `schema` (empty: valid).
    pub fn validate(&self, schema: &Value, value: &Value) -> Vec<String> {
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        match jsonschema::validator_for(&root) {
            Err(e) => vec![format!("the documented schema does not compile: {e}")],
            Ok(v) => v
                .iter_errors(value)
                .map(|e| format!("{} at {}", e, e.instance_path))
                .collect(),
        }
    }

    /// Operations never checked.
    pub fn unexercised(&self) -> Vec<(String, String)> {
        self.operations()
            .into_iter()
            .filter(|(m, p)| !self.seen.iter().any(|(sm, sp, _)| sm == m && sp == p))
            .collect()
    }

    /// Documented (method, path, status) never seen, among statuses `of_interest` (e.g. "2").
    pub fn unseen_statuses(&self, of_interest: impl Fn(&str) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        for (m, p) in self.operations() {
            if let Some(rs) = self.doc["paths"][&p][&m]["responses"].as_object() {
                for status in rs.keys().filter(|s| of_interest(s)) {
                    if !self.seen.contains(&(m.clone(), p.clone(), status.clone())) {
                        out.push(format!("{m} {p} {status}"));
                    }
                }
            }
        }
        out
    }

    /// `v`, or what its `$ref` points to inside the document.
    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .strip_prefix('#')
                .and_then(|ptr| self.doc.pointer(ptr))
                .unwrap_or(v),
            None => v,
        }
    }
}

/// `application/json` matches itself, `application/*` and `*/*`.
fn media_matches(documented: &str, got: &str) -> bool {
    let documented = documented.to_ascii_lowercase();
    documented == got
        || documented == "*/*"
        || documented
            .strip_suffix("/*")
            .is_some_and(|family| got.starts_with(&format!("{family}/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contract() -> Contract {
        Contract::new(json!({
            "openapi": "3.1.0",
            "paths": {"/x/{id}": {"get": {"responses": {
                "200": {"description": "ok", "headers": {"X-Need": {"required": true, "schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                "404": {"description": "no", "content": {"application/json": {"schema": {"type": "object", "required": ["detail"]}}}}
            }}}},
            "components": {"schemas": {"Thing": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}}}
        }))
    }

    fn answer(status: u16, ct: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        Answer {
            status,
            content_type: Some(ct.into()),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_conforming_answer_passes_and_is_recorded() {
        let mut c = contract();
        let a = answer(
            200,
            "application/json; charset=utf-8",
            &[("x-need", "1")],
            r#"{"id": 3}"#,
        );
        assert_eq!(c.check("GET", "/x/{id}", &a), Vec::<String>::new());
        assert!(c.unexercised().is_empty());
        assert_eq!(
            c.unseen_statuses(|s| s.starts_with('4')),
            ["get /x/{id} 404"]
        );
    }

    #[test]
    fn every_kind_of_drift_is_reported() {
        let mut c = contract();
        let cases = [
            (answer(500, "application/json", &[], "{}"), "not documented"),
            (
                answer(
                    200,
                    "application/json",
                    &[("x-need", "1")],
                    r#"{"id": "3"}"#,
                ),
                "\"3\" is not of type",
            ),
            (
                answer(200, "application/json", &[], r#"{"id": 3}"#),
                "required header X-Need missing",
            ),
            (
                answer(200, "text/html", &[("x-need", "1")], "<p>"),
                "content type",
            ),
            (
                answer(404, "application/json", &[], "{}"),
                "\"detail\" is a required property",
            ),
        ];
        for (a, want) in cases {
            let problems = c.check("GET", "/x/{id}", &a);
            assert!(
                problems.iter().any(|p| p.contains(want)),
                "{want}: {problems:?}"
            );
        }
        assert!(!c
            .check(
                "POST",
                "/x/{id}",
                &answer(200, "application/json", &[], "{}")
            )
            .is_empty());
    }
}
