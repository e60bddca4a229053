//! Request parsing with FastAPI/pydantic v2 semantics, so clients of the original server see the
//! same 422 bodies: lax coercion where pydantic is lax ("0.5" is a float, 1 is `true`), every
//! failing field reported at once, and the same `type`, `loc`, `msg` and `ctx` values.
//!
//! We parse bodies and query strings ourselves instead of using axum's `Json`/`Query` extractors
//! because their rejections are plain text in a different shape.

use super::error::{item, ApiError, ValidationItem};
use axum::http::{header, HeaderMap};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// Parse a request body the way FastAPI does for a single pydantic model parameter.
pub fn json_body(headers: &HeaderMap, bytes: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::Validation(vec![item(
            "missing",
            vec![json!("body")],
            "Field required",
            Value::Null,
            None,
        )]));
    }
    let is_json = match headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        // No content type at all: FastAPI still tries JSON.
        None => true,
        Some(ct) => {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        }
    };
    let value = if is_json {
        serde_json::from_slice::<Value>(bytes).map_err(|e| json_invalid(bytes, &e))?
    } else {
        // FastAPI hands the raw bytes to the model, which rejects them as "not an object".
        Value::String(String::from_utf8_lossy(bytes).into_owned())
    };
    match value {
        Value::Object(map) => Ok(map),
        other => Err(ApiError::Validation(vec![item(
            "model_attributes_type",
            vec![json!("body")],
            "Input should be a valid dictionary or object to extract fields from",
            other,
            None,
        )])),
    }
}

/// FastAPI's `json_invalid` error: `loc` is `["body", <character offset of the error>]`.
fn json_invalid(bytes: &[u8], e: &serde_json::Error) -> ApiError {
    let mut offset = 0usize;
    for _ in 1..e.line() {
        match bytes[offset..].iter().position(|b| *b == b'\n') {
            Some(p) => offset += p + 1,
            None => break,
        }
    }
    // Python reports where the parser stopped: for a truncated document, its end.
    let byte_pos = if e.is_eof() {
        bytes.len()
    } else {
        (offset + e.column().saturating_sub(1)).min(bytes.len())
    };
    let char_pos = String::from_utf8_lossy(&bytes[..byte_pos]).chars().count();
    // serde's message without its " at line L column C" suffix (the position is in `loc`).
    let full = e.to_string();
    let message = full.split(" at line ").next().unwrap_or(&full).to_string();
    ApiError::Validation(vec![item(
        "json_invalid",
        vec![json!("body"), json!(char_pos)],
        "JSON decode error",
        json!({}),
        Some(json!({"error": message})),
    )])
}

/// Display a bound the way pydantic-core (Rust) does: `1.0` prints as `1`.
fn num(x: f64) -> String {
    format!("{x}")
}

/// The fields of one JSON object, validated one by one; errors accumulate.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    place: &'static str,
    pub errors: Vec<ValidationItem>,
}

impl<'a> Fields<'a> {
    pub fn body(obj: &'a Map<String, Value>) -> Fields<'a> {
        Fields {
            obj,
            place: "body",
            errors: Vec::new(),
        }
    }

    fn loc(&self, name: &str) -> Vec<Value> {
        vec![json!(self.place), json!(name)]
    }

    fn fail(
        &mut self,
        kind: &str,
        name: &str,
        msg: impl Into<String>,
        input: &Value,
        ctx: Option<Value>,
    ) {
        self.errors
            .push(item(kind, self.loc(name), msg, input.clone(), ctx));
    }

    fn missing(&mut self, name: &str) {
        let whole = Value::Object(self.obj.clone());
        self.fail("missing", name, "Field required", &whole, None);
    }

    /// A required string with optional length bounds (in characters, like Python's `len`).
    pub fn string(&mut self, name: &str, min: Option<usize>, max: Option<usize>) -> Option<String> {
        let Some(v) = self.obj.get(name) else {
            self.missing(name);
            return None;
        };
        let Value::String(s) = v else {
            self.fail(
                "string_type",
                name,
                "Input should be a valid string",
                v,
                None,
            );
            return None;
        };
        let len = s.chars().count();
        if let Some(min) = min.filter(|m| len < *m) {
            let plural = if min == 1 { "" } else { "s" };
            self.fail(
                "string_too_short",
                name,
                format!("String should have at least {min} character{plural}"),
                v,
                Some(json!({"min_length": min})),
            );
            return None;
        }
        if let Some(max) = max.filter(|m| len > *m) {
            let plural = if max == 1 { "" } else { "s" };
            self.fail(
                "string_too_long",
                name,
                format!("String should have at most {max} character{plural}"),
                v,
                Some(json!({"max_length": max})),
            );
            return None;
        }
        Some(s.clone())
    }

    /// An optional string, `default` when absent.
    pub fn string_or(&mut self, name: &str, default: &str) -> Option<String> {
        if !self.obj.contains_key(name) {
            return Some(default.to_string());
        }
        self.string(name, None, None)
    }

    /// An optional float in [ge, le].
    pub fn float(&mut self, name: &str, default: f64, ge: f64, le: f64) -> Option<f64> {
        let Some(v) = self.obj.get(name) else {
            return Some(default);
        };
        let x = match v {
            Value::Number(n) => n.as_f64(),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(x) => Some(x),
                Err(_) => {
                    self.fail(
                        "float_parsing",
                        name,
                        "Input should be a valid number, unable to parse string as a number",
                        v,
                        None,
                    );
                    return None;
                }
            },
            _ => None,
        };
        let Some(x) = x else {
            self.fail(
                "float_type",
                name,
                "Input should be a valid number",
                v,
                None,
            );
            return None;
        };
        if x.is_nan() || x < ge {
            self.fail(
                "greater_than_equal",
                name,
                format!("Input should be greater than or equal to {}", num(ge)),
                v,
                Some(json!({"ge": ge})),
            );
            return None;
        }
        if x > le {
            self.fail(
                "less_than_equal",
                name,
                format!("Input should be less than or equal to {}", num(le)),
                v,
                Some(json!({"le": le})),
            );
            return None;
        }
        Some(x)
    }

    /// An optional integer in [ge, le].
    pub fn int(&mut self, name: &str, default: i64, ge: i64, le: i64) -> Option<i64> {
        let Some(v) = self.obj.get(name) else {
            return Some(default);
        };
        let x = match lax_int(v) {
            Ok(x) => x,
            Err((kind, msg)) => {
                self.fail(kind, name, msg, v, None);
                return None;
            }
        };
        if x < ge {
            self.fail(
                "greater_than_equal",
                name,
                format!("Input should be greater than or equal to {ge}"),
                v,
                Some(json!({"ge": ge})),
            );
            return None;
        }
        if x > le {
            self.fail(
                "less_than_equal",
                name,
                format!("Input should be less than or equal to {le}"),
                v,
                Some(json!({"le": le})),
            );
            return None;
        }
        Some(x)
    }

    /// An optional boolean.
    pub fn boolean(&mut self, name: &str, default: bool) -> Option<bool> {
        let Some(v) = self.obj.get(name) else {
            return Some(default);
        };
        let parsing = "Input should be a valid boolean, unable to interpret input";
        let b = match v {
            Value::Bool(b) => *b,
            Value::Number(n) => match n.as_f64() {
                Some(0.0) => false,
                Some(1.0) => true,
                _ => {
                    self.fail("bool_parsing", name, parsing, v, None);
                    return None;
                }
            },
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "0" | "off" | "f" | "false" | "n" | "no" => false,
                "1" | "on" | "t" | "true" | "y" | "yes" => true,
                _ => {
                    self.fail("bool_parsing", name, parsing, v, None);
                    return None;
                }
            },
            _ => {
                self.fail(
                    "bool_type",
                    name,
                    "Input should be a valid boolean",
                    v,
                    None,
                );
                return None;
            }
        };
        Some(b)
    }

    /// An optional JSON object.
    pub fn dict(&mut self, name: &str) -> Option<Value> {
        match self.obj.get(name) {
            None => Some(json!({})),
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(v) => {
                self.fail(
                    "dict_type",
                    name,
                    "Input should be a valid dictionary",
                    v,
                    None,
                );
                None
            }
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// Pydantic's lax integer: integral floats, numeric strings and booleans are accepted.
fn lax_int(v: &Value) -> Result<i64, (&'static str, &'static str)> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(i)
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 9.2e18 => Ok(f as i64),
                    Some(f) if f.is_finite() && f.fract() != 0.0 => Err((
                        "int_from_float",
                        "Input should be a valid integer, got a number with a fractional part",
                    )),
                    _ => Err((
                        "int_parsing",
                        "Input should be a valid integer, unable to parse string as an integer",
                    )),
                }
            }
        }
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::String(s) => s.trim().parse::<i64>().map_err(|_| {
            (
                "int_parsing",
                "Input should be a valid integer, unable to parse string as an integer",
            )
        }),
        _ => Err(("int_type", "Input should be a valid integer")),
    }
}

/// Query parameters; for repeated names the last value wins, as in Starlette.
pub struct Query {
    params: HashMap<String, String>,
    pub errors: Vec<ValidationItem>,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let params = url::form_urlencoded::parse(raw.unwrap_or("").as_bytes())
            .into_owned()
            .collect();
        Query {
            params,
            errors: Vec::new(),
        }
    }

    fn loc(name: &str) -> Vec<Value> {
        vec![json!("query"), json!(name)]
    }

    pub fn required_str(&mut self, name: &str) -> Option<String> {
        let v = self.params.get(name).cloned();
        if v.is_none() {
            self.errors.push(item(
                "missing",
                Self::loc(name),
                "Field required",
                Value::Null,
                None,
            ));
        }
        v
    }

    pub fn optional_str(&self, name: &str) -> Option<String> {
        self.params.get(name).cloned()
    }

    pub fn optional_int(&mut self, name: &str) -> Option<i64> {
        let raw = self.params.get(name)?;
        match raw.trim().parse::<i64>() {
            Ok(x) => Some(x),
            Err(_) => {
                let raw = raw.clone();
                self.errors.push(item(
                    "int_parsing",
                    Self::loc(name),
                    "Input should be a valid integer, unable to parse string as an integer",
                    json!(raw),
                    None,
                ));
                None
            }
        }
    }

    pub fn int(&mut self, name: &str, default: i64) -> i64 {
        self.optional_int(name).unwrap_or(default)
    }

    /// Record an error for a parameter whose value did not make sense (e.g. a bad date).
    pub fn value_error(&mut self, name: &str, msg: &str) {
        let raw = self.params.get(name).cloned().unwrap_or_default();
        self.errors.push(item(
            "value_error",
            Self::loc(name),
            format!("Value error, {msg}"),
            json!(raw),
            Some(json!({"error": msg})),
        ));
    }

    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.errors))
        }
    }
}

/// Parse an ISO date or date-time into Unix seconds. A date alone means the start of that day
/// (UTC), or, for the end of a range, the end of it, so `end=2024-05-01` includes that day.
/// Naive date-times are UTC.
pub fn iso_time(raw: &str, end_of_day: bool) -> Option<f64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    let s = raw.trim();
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let t = d.and_hms_opt(0, 0, 0)?.and_utc().timestamp() as f64;
        return Some(if end_of_day { t + 86_400.0 - 1e-6 } else { t });
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_micros() as f64 / 1e6);
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(dt.and_utc().timestamp_micros() as f64 / 1e6);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(r: Result<(), ApiError>) -> Vec<Value> {
        match r {
            Err(ApiError::Validation(v)) => v
                .into_iter()
                .map(|i| serde_json::to_value(i).unwrap())
                .collect(),
            other => panic!("expected validation errors, got {other:?}"),
        }
    }

    #[test]
    fn store_like_body_reports_every_bad_field() {
        let obj =
            json!({"content": "", "importance": 1.5, "metadata": [1], "auto_evaluate": "maybe"});
        let map = obj.as_object().unwrap();
        let mut f = Fields::body(map);
        f.string("content", Some(1), Some(10_000));
        f.float("importance", 0.5, 0.0, 1.0);
        f.dict("metadata");
        f.boolean("auto_evaluate", false);
        let e = errors(f.finish());
        assert_eq!(e.len(), 4);
        assert_eq!(
            e[0],
            json!({"type": "string_too_short", "loc": ["body", "content"], "msg": "String should have at least 1 character", "input": "", "ctx": {"min_length": 1}})
        );
        assert_eq!(
            e[1],
            json!({"type": "less_than_equal", "loc": ["body", "importance"], "msg": "Input should be less than or equal to 1", "input": 1.5, "ctx": {"le": 1.0}})
        );
        assert_eq!(e[2]["type"], "dict_type");
        assert_eq!(e[3]["type"], "bool_parsing");
    }

    #[test]
    fn lax_coercions_match_pydantic() {
        let obj = json!({"importance": "0.25", "auto_evaluate": 1, "limit": 5.0, "n": "7"});
        let map = obj.as_object().unwrap();
        let mut f = Fields::body(map);
        assert_eq!(f.float("importance", 0.5, 0.0, 1.0), Some(0.25));
        assert_eq!(f.boolean("auto_evaluate", false), Some(true));
        assert_eq!(f.int("limit", 10, 1, 50), Some(5));
        assert_eq!(f.int("n", 10, 1, 50), Some(7));
        assert!(f.finish().is_ok());
        let obj = json!({"limit": 2.5});
        let mut f = Fields::body(obj.as_object().unwrap());
        assert_eq!(f.int("limit", 10, 1, 50), None);
        assert_eq!(errors(f.finish())[0]["type"], "int_from_float");
    }

    #[test]
    fn missing_field_reports_the_whole_body_as_input() {
        let obj = json!({"importance": 0.5});
        let mut f = Fields::body(obj.as_object().unwrap());
        assert_eq!(f.string("content", Some(1), None), None);
        assert_eq!(
            errors(f.finish())[0],
            json!({"type": "missing", "loc": ["body", "content"], "msg": "Field required", "input": {"importance": 0.5}})
        );
    }

    #[test]
    fn malformed_json_gives_json_invalid_with_position() {
        let h = HeaderMap::new();
        let e = match json_body(&h, b"{\"content\": }") {
            Err(e @ ApiError::Validation(_)) => errors(Err(e)),
            other => panic!("{other:?}"),
        };
        assert_eq!(e[0]["type"], "json_invalid");
        assert_eq!(e[0]["loc"][0], "body");
        assert_eq!(e[0]["loc"][1], 12);
        assert_eq!(e[0]["msg"], "JSON decode error");
        // Truncated: Python's json reports the end of the document ("Expecting value ... char 12").
        let e = match json_body(&h, b"{\"content\": ") {
            Err(e @ ApiError::Validation(_)) => errors(Err(e)),
            other => panic!("{other:?}"),
        };
        assert_eq!(e[0]["loc"], json!(["body", 12]));
        let e = match json_body(&h, b"[1, 2]") {
            Err(e @ ApiError::Validation(_)) => errors(Err(e)),
            other => panic!("{other:?}"),
        };
        assert_eq!(e[0]["type"], "model_attributes_type");
        assert!(
            matches!(json_body(&h, b""), Err(ApiError::Validation(v)) if v[0].kind == "missing")
        );
    }

    #[test]
    fn non_json_content_type_is_not_parsed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        let e = match json_body(&h, b"{\"content\": \"x\"}") {
            Err(e @ ApiError::Validation(_)) => errors(Err(e)),
            other => panic!("{other:?}"),
        };
        assert_eq!(e[0]["type"], "model_attributes_type");
        h.insert(
            header::CONTENT_TYPE,
            "application/vnd.api+json; charset=utf-8".parse().unwrap(),
        );
        assert!(json_body(&h, b"{\"content\": \"x\"}").is_ok());
    }

    #[test]
    fn query_parsing() {
        let mut q = Query::parse(Some("q=dark%20mode&limit=abc&limit=7"));
        assert_eq!(q.required_str("q").as_deref(), Some("dark mode"));
        assert_eq!(q.int("limit", 5), 7);
        assert!(q.finish().is_ok());
        let mut q = Query::parse(Some("limit=x"));
        assert_eq!(q.required_str("q"), None);
        q.int("limit", 5);
        let e = errors(q.finish());
        assert_eq!(
            e[0],
            json!({"type": "missing", "loc": ["query", "q"], "msg": "Field required", "input": null})
        );
        assert_eq!(e[1]["type"], "int_parsing");
        assert_eq!(e[1]["input"], "x");
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso_time("2024-01-02", false), Some(1_704_153_600.0));
        assert!(iso_time("2024-01-02", true).unwrap() > 1_704_153_600.0 + 86_399.0);
        assert_eq!(
            iso_time("2024-01-02T00:00:00Z", false),
            Some(1_704_153_600.0)
        );
        assert_eq!(
            iso_time("2024-01-02T01:00:00+01:00", false),
            Some(1_704_153_600.0)
        );
        assert_eq!(
            iso_time("2024-01-02T00:00:00", false),
            Some(1_704_153_600.0)
        );
        assert_eq!(iso_time("yesterday", false), None);
    }
}
