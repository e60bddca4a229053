//! Routing on arbitrary request lines. `classify` and `classify_target` never panic; a target
//! `classify_target` accepts is origin-form with none of the parts other servers read differently
//! (fragment, `;` parameters, dot segments, empty segments), and its route is the one `classify`
//! gives its path and the one `classify` gives the path as a lenient server would normalise it.
//! A target with `#` (in its path or its query) or a dot segment is never accepted, so never
//! routed as a store behind the quota's back.
//!
//! Input: the method, one space, the target (UTF-8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use stellar_proto::route::{classify, classify_target, EngineOp, Route, METHODS};

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let (method, target) = line.split_once(' ').unwrap_or((line, ""));
    let path = target.split('?').next().unwrap_or(target);
    let store = Route::Engine(EngineOp::Store);

    // `classify` works on a path it is given and never panics; whether the target it came from
    // may be routed at all is `classify_target`'s decision, checked below.
    let _ = classify(method, target);
    let by_path = classify(method, path);
    let suspicious = target.contains('#') || has_dot_segment(path);
    // A fragment in the path can never make a raw path a store.
    if path.contains('#') {
        assert_ne!(classify(method, path), store, "{method} {target}");
    }

    let Ok(route) = classify_target(method, target) else {
        return;
    };
    assert!(METHODS.contains(&method));
    assert!(target.starts_with('/'), "{target}");
    assert!(!suspicious, "{target}");
    assert!(!path.contains(';') && !path.contains("//"), "{target}");
    assert_eq!(route, by_path, "{method} {target}");
    // What a server that normalises the path (fragment dropped, `;` parameters stripped,
    // unreserved characters decoded, dot segments removed, slashes merged) would route it to.
    assert_eq!(
        route,
        classify(method, &lenient(path)),
        "{method} {target} normalises to {}",
        lenient(path)
    );
});

fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

fn lenient(path: &str) -> String {
    let path = path.split('#').next().unwrap_or(path);
    let mut decoded = Vec::new();
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                let c = h << 4 | l;
                if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~') {
                    decoded.push(c);
                    i += 3;
                    continue;
                }
            }
        }
        decoded.push(b[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        let seg = seg.split(';').next().unwrap_or(seg);
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut p = format!("/{}", out.join("/"));
    if decoded.ends_with('/') && p != "/" {
        p.push('/');
    }
    p
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}
