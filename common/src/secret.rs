//! A configuration secret (API keys, webhook secrets, encryption keys): deserialises from a plain
//! string, but its `Debug` prints `"***"`, so a settings struct printed for diagnostics never
//! leaks it. Read it with [`Secret::expose`], at the one place it is used.

#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_never_shows_the_value() {
        let s: super::Secret = serde_json::from_str("\"whsec_abc\"").unwrap();
        assert_eq!(s.expose(), "whsec_abc");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert!(!format!("{:?}", Some(s)).contains("whsec"));
    }
}
