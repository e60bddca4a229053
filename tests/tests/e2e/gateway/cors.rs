//! CORS through the real gateway (issue 16): a browser's preflight is answered by the gateway
//! without a key, for the public URL's origin (the default) with credentials, for a configured
//! other origin without them, and refused for any other; the answers of the engine and billing
//! carry the gateway's `Access-Control-*` fields and nothing the upstream says about CORS.

use stellar_tests::both_dbs;
use stellar_tests::harness::*;

const OWN: &str = "http://127.0.0.1:8080";
const APP: &str = "https://app.example";

async fn preflight(gw: &Gateway, origin: &str) -> reqwest::Response {
    client()
        .request(reqwest::Method::OPTIONS, gw.url("/api/v1/store"))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "x-api-key, content-type")
        .send()
        .await
        .unwrap()
}

fn field(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
}

async fn cors(backend: Backend) {
    let env = [(
        "STELLAR_GATEWAY_CORS_ORIGINS",
        format!("[\"{OWN}\", \"{APP}\"]"),
    )];
    let Some(s) = full_stack(backend, "gw-cors", &env).await else {
        return;
    };
    let gw = s.gw();
    let (key, _, _) = register_with_two_keys(gw).await;

    let r = preflight(gw, OWN).await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        field(&r, "access-control-allow-origin").as_deref(),
        Some(OWN)
    );
    assert_eq!(
        field(&r, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(field(&r, "access-control-allow-headers")
        .unwrap()
        .contains("X-API-Key"));
    assert!(field(&r, "access-control-allow-methods")
        .unwrap()
        .contains("POST"));
    let r = preflight(gw, APP).await;
    assert_eq!(r.status(), 204);
    assert_eq!(field(&r, "access-control-allow-credentials"), None);
    let r = preflight(gw, "https://evil.example").await;
    assert_eq!(r.status(), 403);
    assert_eq!(field(&r, "access-control-allow-origin"), None);

    // Real answers: the engine's and billing's, with the gateway's fields.
    for path in ["/api/v1/stats", "/auth/usage"] {
        let r = client()
            .get(gw.url(path))
            .header("X-API-Key", &key)
            .header("Origin", APP)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(
            field(&r, "access-control-allow-origin").as_deref(),
            Some(APP),
            "{path}"
        );
        assert!(field(&r, "access-control-expose-headers")
            .unwrap()
            .contains("RateLimit"));
        assert_eq!(
            r.headers()
                .get_all("access-control-allow-origin")
                .iter()
                .count(),
            1
        );
    }
    // A refusal carries them too (the browser can read the error); no Origin, no fields.
    let r = client()
        .get(gw.url("/api/v1/stats"))
        .header("Origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        field(&r, "access-control-allow-origin").as_deref(),
        Some(APP)
    );
    let r = client()
        .get(gw.url("/api/v1/stats"))
        .header("X-API-Key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(field(&r, "access-control-allow-origin"), None);
}

both_dbs!(cors_at_the_gateway, super::cors);
