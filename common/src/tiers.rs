//! The tier table (`config/tiers.toml`): one table per tier, in upgrade order.

use std::path::Path;
use std::sync::Arc;

/// One tier's limits and prices.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Tier {
    pub name: String,
    /// Memories an account may hold in the engine.
    pub max_memories: u64,
    /// Distinct `X-Stellar-Agent` values an account may use.
    pub max_agents: u32,
    /// Token-bucket refill rate.
    pub requests_per_minute: u32,
    /// Token-bucket capacity (defaults to `requests_per_minute`).
    pub burst: u32,
    /// Active API keys an account may hold.
    pub max_api_keys: u32,
    /// People an account may have: the owner and invited members, pending invitations included
    /// (default 1: the owner alone).
    pub max_members: u32,
    /// Monthly price in US dollars (whole dollars).
    pub price_usd: u64,
    /// Monthly price in Korean won (TossPayments).
    pub price_krw: u64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TierFile {
    max_memories: u64,
    max_agents: u32,
    requests_per_minute: u32,
    #[serde(default)]
    burst: Option<u32>,
    max_api_keys: u32,
    #[serde(default)]
    max_members: Option<u32>,
    price_usd: u64,
    price_krw: u64,
}

/// All tiers, in upgrade order. The first is the one new accounts get.
#[derive(Debug, Clone)]
pub struct Tiers {
    list: Vec<Arc<Tier>>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid tier table {origin}: {message}")]
pub struct TierError {
    origin: String,
    message: String,
}

impl Tiers {
    /// Read and validate a tier file.
    pub fn load(path: &Path) -> Result<Tiers, TierError> {
        let text = std::fs::read_to_string(path).map_err(|e| TierError {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse a tier table from TOML text.
    pub fn parse(text: &str, origin: &str) -> Result<Tiers, TierError> {
        let err = |message: String| TierError {
            origin: origin.to_string(),
            message,
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| err(e.to_string()))?;
        let mut list = Vec::new();
        for (name, value) in table {
            let t: TierFile = serde_path_to_error::deserialize(value)
                .map_err(|e| err(format!("`{name}.{}`: {}", e.path(), e.inner())))?;
            if t.requests_per_minute == 0 {
                return Err(err(format!(
                    "`{name}.requests_per_minute` must be at least 1"
                )));
            }
            if t.burst == Some(0) {
                return Err(err(format!("`{name}.burst` must be at least 1")));
            }
            list.push(Arc::new(Tier {
                burst: t.burst.unwrap_or(t.requests_per_minute),
                name,
                max_memories: t.max_memories,
                max_agents: t.max_agents,
                requests_per_minute: t.requests_per_minute,
                max_api_keys: t.max_api_keys,
                max_members: t.max_members.unwrap_or(1).max(1),
                price_usd: t.price_usd,
                price_krw: t.price_krw,
            }));
        }
        if list.is_empty() {
            return Err(err("no tiers defined".into()));
        }
        Ok(Tiers { list })
    }

    /// The tier called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Tier>> {
        self.list.iter().find(|t| t.name == name)
    }

    /// The tier called `name`, or the default tier for names the table does not know (an
    /// account whose tier was removed from the table keeps working with the smallest limits).
    pub fn get_or_default(&self, name: &str) -> &Arc<Tier> {
        self.get(name).unwrap_or_else(|| self.default_tier())
    }

    /// The first tier: what new accounts get and what a lapsed subscription drops to.
    pub fn default_tier(&self) -> &Arc<Tier> {
        &self.list[0]
    }

    /// The tier after `name` in upgrade order, if any.
    pub fn next_after(&self, name: &str) -> Option<&Arc<Tier>> {
        let i = self.list.iter().position(|t| t.name == name)?;
        self.list.get(i + 1)
    }

    /// All tiers in upgrade order.
    pub fn all(&self) -> &[Arc<Tier>] {
        &self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_tier_table_matches_the_plan() {
        let t = Tiers::parse(include_str!("../../config/tiers.toml"), "config/tiers.toml").unwrap();
        let names: Vec<_> = t.all().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["free", "pro", "team"]);
        let free = t.get("free").unwrap();
        assert_eq!(
            (
                free.max_memories,
                free.max_agents,
                free.requests_per_minute,
                free.max_api_keys
            ),
            (5000, 1, 60, 1)
        );
        assert_eq!(free.burst, 60);
        let team = t.get("team").unwrap();
        assert_eq!(
            (team.max_memories, team.price_usd, team.price_krw),
            (500_000, 99, 129_000)
        );
        assert_eq!(t.next_after("free").unwrap().name, "pro");
        assert!(t.next_after("team").is_none());
        assert_eq!(t.get_or_default("gold").name, "free");
    }

    #[test]
    fn bad_tables_are_rejected_with_the_key() {
        let e = Tiers::parse("[free]\nmax_memories = \"lots\"\n", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("free.max_memories"), "{e}");
        let e = Tiers::parse("[free]\nmax_memories=1\nmax_agents=1\nrequests_per_minute=0\nmax_api_keys=1\nprice_usd=0\nprice_krw=0\n", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("requests_per_minute"), "{e}");
        assert!(Tiers::parse("", "x").is_err());
    }
}
