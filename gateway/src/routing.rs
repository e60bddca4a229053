//! Step 1 of the hot path: which upstream a request goes to and what it needs on the way.

/// What the gateway does with a request, decided from the method and path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /api/v1/health`: public, straight to the engine.
    Health,
    /// Any other `/api/v1/*`: needs a key.
    Engine(EngineOp),
    /// Everything else goes to billing, which authenticates its own endpoints. `ip_limited`
    /// routes (sign-up, checkout) are unauthenticated and get the per-IP bucket.
    Billing { ip_limited: bool },
}

/// Engine operations the gateway treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineOp {
    /// `POST /api/v1/store`: reserves one memory of the quota.
    Store,
    /// `DELETE /api/v1/forget/{id}`: a 2xx frees one.
    Forget,
    /// `GET /api/v1/events`: server-sent events, long read timeout.
    Events,
    /// Everything else (including paths this gateway does not know: they pass through).
    Other,
}

impl Route {
    /// Bounded label for metrics (never the raw path).
    pub fn label(self) -> &'static str {
        match self {
            Route::Health => "health",
            Route::Engine(EngineOp::Store) => "store",
            Route::Engine(EngineOp::Forget) => "forget",
            Route::Engine(EngineOp::Events) => "events",
            Route::Engine(EngineOp::Other) => "engine",
            Route::Billing { .. } => "billing",
        }
    }

    pub fn is_engine(self) -> bool {
        matches!(self, Route::Health | Route::Engine(_))
    }
}

/// Classify a request. `path` is the URI path without the query string.
pub fn classify(method: &str, path: &str) -> Route {
    if let Some(rest) = path.strip_prefix("/api/v1") {
        if !(rest.is_empty() || rest.starts_with('/')) {
            // "/api/v1foo" is not the engine API.
            return billing(method, path);
        }
        let rest = rest.trim_end_matches('/');
        return match (method, rest) {
            ("GET" | "HEAD", "/health") => Route::Health,
            ("POST", "/store") => Route::Engine(EngineOp::Store),
            ("DELETE", r) if r.starts_with("/forget/") && r.len() > "/forget/".len() => {
                Route::Engine(EngineOp::Forget)
            }
            ("GET", "/events") => Route::Engine(EngineOp::Events),
            _ => Route::Engine(EngineOp::Other),
        };
    }
    billing(method, path)
}

fn billing(method: &str, path: &str) -> Route {
    let ip_limited = match method {
        "POST" => path == "/auth/register" || path == "/billing/toss/confirm" || is_checkout(path),
        "GET" => is_checkout(path),
        _ => false,
    };
    Route::Billing { ip_limited }
}

/// `/billing/{provider}/checkout`
fn is_checkout(path: &str) -> bool {
    path.strip_prefix("/billing/")
        .and_then(|r| r.strip_suffix("/checkout"))
        .is_some_and(|provider| !provider.is_empty() && !provider.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(classify("GET", "/api/v1/health"), Route::Health);
        assert_eq!(
            classify("POST", "/api/v1/store"),
            Route::Engine(EngineOp::Store)
        );
        assert_eq!(
            classify("POST", "/api/v1/store/"),
            Route::Engine(EngineOp::Store)
        );
        assert_eq!(
            classify("DELETE", "/api/v1/forget/abc"),
            Route::Engine(EngineOp::Forget)
        );
        assert_eq!(
            classify("DELETE", "/api/v1/forget/"),
            Route::Engine(EngineOp::Other)
        );
        assert_eq!(
            classify("GET", "/api/v1/events"),
            Route::Engine(EngineOp::Events)
        );
        assert_eq!(
            classify("GET", "/api/v1/recall"),
            Route::Engine(EngineOp::Other)
        );
        assert_eq!(
            classify("GET", "/api/v1/unknown/thing"),
            Route::Engine(EngineOp::Other)
        );
        assert_eq!(classify("GET", "/api/v1"), Route::Engine(EngineOp::Other));
        assert_eq!(
            classify("GET", "/api/v1foo"),
            Route::Billing { ip_limited: false }
        );
        assert_eq!(classify("GET", "/"), Route::Billing { ip_limited: false });
        assert_eq!(
            classify("POST", "/auth/register"),
            Route::Billing { ip_limited: true }
        );
        assert_eq!(
            classify("POST", "/billing/stripe/checkout"),
            Route::Billing { ip_limited: true }
        );
        assert_eq!(
            classify("GET", "/billing/toss/checkout"),
            Route::Billing { ip_limited: true }
        );
        assert_eq!(
            classify("GET", "/billing/tiers"),
            Route::Billing { ip_limited: false }
        );
        assert_eq!(
            classify("POST", "/webhook/stripe"),
            Route::Billing { ip_limited: false }
        );
    }
}
