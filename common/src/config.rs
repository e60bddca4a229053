//! Layered configuration.
//!
//! Layers, lowest first: the defaults compiled in from `config/stellar.toml` (so every key is
//! known and documented in one place), the file given with `--config` or `STELLAR_CONFIG`, then
//! environment variables. A key `k` in section `[s]` is read from `STELLAR_S_K`, a top-level key
//! from `STELLAR_K`; the provider sections also honour the original system's names
//! (`LEMON_*`, `STRIPE_*`, `TOSS_*`) so an existing deployment's secrets carry over unchanged.
//!
//! Values from the environment are converted to the type of the default they replace, and every
//! error names the key, where it came from and the expected form.

use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The defaults: the repository's `config/stellar.toml`, compiled in.
pub const DEFAULTS: &str = include_str!("../../config/stellar.toml");

/// Sections whose keys may also be given under the original system's variable prefix.
const LEGACY_PREFIXES: &[(&str, &str)] = &[
    ("lemon", "LEMON_"),
    ("stripe", "STRIPE_"),
    ("toss", "TOSS_"),
];

/// Extra names for single keys, kept because the issue and the original system use them.
const ALIASES: &[(&str, &str)] = &[("STELLAR_METRICS_ADDR", "gateway.metrics_addr")];

/// A configuration problem, reported with the key and the expected form.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: `{key}` (from {source_name}): {message}")]
    Invalid {
        key: String,
        source_name: String,
        message: String,
    },
    #[error("cannot read config file {path}: {message}")]
    File { path: String, message: String },
}

/// The merged configuration document.
#[derive(Debug, Clone)]
pub struct Config {
    root: toml::Table,
    /// Dotted key → where its value came from ("env STELLAR_X", "file path", "defaults").
    sources: HashMap<String, String>,
}

/// The top-level keys every service reads.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommonConfig {
    /// Where SQLite files live by default.
    pub data_dir: PathBuf,
    /// The tier table.
    pub tiers_file: PathBuf,
    /// Account DB URL; empty means `sqlite://{data_dir}/accounts.db`.
    pub db_url: String,
}

impl CommonConfig {
    /// The account DB URL with the SQLite default filled in.
    pub fn account_db_url(&self) -> String {
        default_sqlite_url(&self.db_url, &self.data_dir, "accounts.db")
    }
}

/// `url` if set, else a SQLite file named `file` under `data_dir`.
pub fn default_sqlite_url(url: &str, data_dir: &Path, file: &str) -> String {
    if url.trim().is_empty() {
        format!("sqlite://{}", data_dir.join(file).display())
    } else {
        url.trim().to_string()
    }
}

impl Config {
    /// Load from the defaults, `path` (or `STELLAR_CONFIG`) and the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let env: BTreeMap<String, String> = std::env::vars().collect();
        let from_env = env
            .get("STELLAR_CONFIG")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from);
        let path = path.map(Path::to_path_buf).or(from_env);
        let file = match &path {
            Some(p) => Some((
                p.display().to_string(),
                std::fs::read_to_string(p).map_err(|e| ConfigError::File {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?,
            )),
            None => None,
        };
        Self::from_parts(file.as_ref().map(|(p, s)| (p.as_str(), s.as_str())), &env)
    }

    /// Build from an optional file `(name, text)` and an explicit environment (tests use this).
    pub fn from_parts(
        file: Option<(&str, &str)>,
        env: &BTreeMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut root: toml::Table =
            DEFAULTS
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::File {
                    path: "embedded defaults".into(),
                    message: e.to_string(),
                })?;
        let mut sources = HashMap::new();
        if let Some((name, text)) = file {
            let overlay: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::File {
                        path: name.into(),
                        message: e.to_string(),
                    })?;
            merge(
                &mut root,
                overlay,
                "",
                &format!("file {name}"),
                &mut sources,
            );
        }
        apply_env(&mut root, env, &mut sources)?;
        Ok(Config { root, sources })
    }

    /// The top-level keys.
    pub fn common(&self) -> Result<CommonConfig, ConfigError> {
        let mut top = toml::Table::new();
        for (k, v) in &self.root {
            if !v.is_table() {
                top.insert(k.clone(), v.clone());
            }
        }
        self.decode("", toml::Value::Table(top))
    }

    /// Section `[name]` decoded into `T`.
    pub fn section<T: DeserializeOwned>(&self, name: &str) -> Result<T, ConfigError> {
        let value = self
            .root
            .get(name)
            .cloned()
            .unwrap_or_else(|| toml::Value::Table(Default::default()));
        self.decode(name, value)
    }

    /// Where a dotted key's value came from: `"defaults"`, `"file …"` or `"env …"`.
    pub fn source(&self, dotted: &str) -> &str {
        self.sources.get(dotted).map_or("defaults", String::as_str)
    }

    /// The raw value of a dotted key, if set (for diagnostics and the launcher).
    pub fn raw(&self, dotted: &str) -> Option<&toml::Value> {
        let mut cur = &self.root;
        let mut parts = dotted.split('.').peekable();
        while let Some(p) = parts.next() {
            let v = cur.get(p)?;
            if parts.peek().is_none() {
                return Some(v);
            }
            cur = v.as_table()?;
        }
        None
    }

    fn decode<T: DeserializeOwned>(
        &self,
        prefix: &str,
        value: toml::Value,
    ) -> Result<T, ConfigError> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let inner = e.path().to_string();
            let key = match (prefix.is_empty(), inner.as_str()) {
                (true, p) => p.to_string(),
                (false, ".") => prefix.to_string(),
                (false, p) => format!("{prefix}.{p}"),
            };
            let source_name = self
                .sources
                .get(&key)
                .cloned()
                .unwrap_or_else(|| "defaults".into());
            ConfigError::Invalid {
                key,
                source_name,
                message: e.into_inner().to_string(),
            }
        })
    }
}

fn merge(
    base: &mut toml::Table,
    overlay: toml::Table,
    prefix: &str,
    source: &str,
    sources: &mut HashMap<String, String>,
) {
    for (k, v) in overlay {
        let dotted = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => {
                merge(b, o, &dotted, source, sources)
            }
            (_, v) => {
                sources.insert(dotted, source.to_string());
                base.insert(k, v);
            }
        }
    }
}

/// The environment variable names that set `section.key` (section "" = top level).
pub fn env_names(section: &str, key: &str) -> Vec<String> {
    let key_up = key.to_ascii_uppercase();
    let mut names = Vec::new();
    if section.is_empty() {
        names.push(format!("STELLAR_{key_up}"));
    } else {
        names.push(format!("STELLAR_{}_{key_up}", section.to_ascii_uppercase()));
        for (s, prefix) in LEGACY_PREFIXES {
            if *s == section {
                names.push(format!("{prefix}{key_up}"));
            }
        }
    }
    let dotted = if section.is_empty() {
        key.to_string()
    } else {
        format!("{section}.{key}")
    };
    for (name, target) in ALIASES {
        if *target == dotted {
            names.push((*name).to_string());
        }
    }
    names
}

fn apply_env(
    root: &mut toml::Table,
    env: &BTreeMap<String, String>,
    sources: &mut HashMap<String, String>,
) -> Result<(), ConfigError> {
    let mut updates: Vec<(String, String, String, toml::Value)> = Vec::new();
    let mut visit = |section: &str, table: &toml::Table| -> Result<(), ConfigError> {
        for (k, current) in table {
            if current.is_table() {
                continue;
            }
            // The first name found wins, in the order env_names lists them (STELLAR_ first).
            if let Some((name, raw)) = env_names(section, k)
                .into_iter()
                .find_map(|n| env.get(&n).map(|v| (n, v.clone())))
            {
                let dotted = if section.is_empty() {
                    k.clone()
                } else {
                    format!("{section}.{k}")
                };
                let value = convert(&raw, current).map_err(|expected| ConfigError::Invalid {
                    key: dotted.clone(),
                    source_name: format!("env {name}"),
                    message: format!("expected {expected}, got {raw:?}"),
                })?;
                updates.push((section.to_string(), k.clone(), name, value));
            }
        }
        Ok(())
    };
    visit("", root)?;
    for (name, v) in root.iter() {
        if let toml::Value::Table(t) = v {
            visit(name, t)?;
        }
    }
    for (section, key, name, value) in updates {
        let dotted = if section.is_empty() {
            key.clone()
        } else {
            format!("{section}.{key}")
        };
        sources.insert(dotted, format!("env {name}"));
        let table = if section.is_empty() {
            &mut *root
        } else {
            match root.get_mut(&section) {
                Some(toml::Value::Table(t)) => t,
                _ => continue,
            }
        };
        table.insert(key, value);
    }
    Ok(())
}

/// Convert an environment string to the type of the default it replaces.
fn convert(raw: &str, like: &toml::Value) -> Result<toml::Value, &'static str> {
    let raw = raw.trim();
    Ok(match like {
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Integer(_) => toml::Value::Integer(raw.parse().map_err(|_| "an integer")?),
        toml::Value::Float(_) => toml::Value::Float(raw.parse().map_err(|_| "a number")?),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return Err("a boolean (true/false)"),
        }),
        toml::Value::Array(_) => {
            // Either a TOML array literal or a comma-separated list of strings.
            match format!("v = {raw}").parse::<toml::Table>() {
                Ok(mut t) if t.get("v").is_some_and(toml::Value::is_array) => {
                    t.remove("v").unwrap_or(toml::Value::Array(vec![]))
                }
                _ => toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| toml::Value::String(s.into()))
                        .collect(),
                ),
            }
        }
        toml::Value::Datetime(_) | toml::Value::Table(_) => {
            return Err("a value of the default's type")
        }
    })
}

/// Print a configuration error the way every binary does and exit 64 (EX_USAGE).
pub fn exit_on_error<T>(r: Result<T, ConfigError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    struct Gw {
        addr: std::net::SocketAddr,
        metrics_addr: std::net::SocketAddr,
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_decode() {
        let c = Config::from_parts(None, &env(&[])).unwrap();
        let g: Gw = c.section("gateway").unwrap();
        assert_eq!(g.addr.to_string(), "127.0.0.1:8080");
        let common = c.common().unwrap();
        assert_eq!(common.account_db_url(), "sqlite://./data/accounts.db");
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let file = "[gateway]\naddr = \"127.0.0.1:7000\"\nmetrics_addr = \"127.0.0.1:7001\"\n";
        let c = Config::from_parts(
            Some(("x.toml", file)),
            &env(&[("STELLAR_GATEWAY_ADDR", "127.0.0.1:7100")]),
        )
        .unwrap();
        let g: Gw = c.section("gateway").unwrap();
        assert_eq!(g.addr.port(), 7100);
        assert_eq!(g.metrics_addr.port(), 7001);
        let c = Config::from_parts(
            None,
            &env(&[
                ("STELLAR_METRICS_ADDR", "127.0.0.1:9999"),
                ("STELLAR_DATA_DIR", "/tmp/d"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.section::<Gw>("gateway").unwrap().metrics_addr.port(),
            9999
        );
        assert_eq!(c.common().unwrap().data_dir, PathBuf::from("/tmp/d"));
    }

    #[test]
    fn bad_value_names_key_and_source() {
        let c =
            Config::from_parts(None, &env(&[("STELLAR_GATEWAY_ADDR", "not-an-address")])).unwrap();
        let e = c.section::<Gw>("gateway").unwrap_err().to_string();
        assert!(e.contains("gateway.addr"), "{e}");
        assert!(e.contains("STELLAR_GATEWAY_ADDR"), "{e}");
        assert!(e.contains("socket address"), "{e}");
    }

    #[test]
    fn typed_env_conversion_errors() {
        let e = Config::from_parts(
            None,
            &env(&[("STELLAR_ENGINE_REORBIT_INTERVAL_SECS", "soon")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("engine.reorbit_interval_secs") && e.contains("an integer"),
            "{e}"
        );
    }

    #[test]
    fn legacy_prefixes_are_honoured() {
        assert!(env_names("stripe", "secret_key").contains(&"STRIPE_SECRET_KEY".to_string()));
        assert!(env_names("lemon", "api_key").contains(&"LEMON_API_KEY".to_string()));
        assert_eq!(env_names("", "db_url"), vec!["STELLAR_DB_URL".to_string()]);
    }
}
