//! Knowing what one knows: the original's `Introspector` and `ConfidenceScorer`
//! (`stellar_memory/metacognition.py`) with their default `MetacognitionConfig`.

use super::{py_round, Source};
use crate::model::Tags;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

/// Weights of coverage, freshness and density in introspection's confidence (`confidence_alpha`,
/// `_beta`, `_gamma`).
const ALPHA: f64 = 0.4;
const BETA: f64 = 0.3;
const GAMMA: f64 = 0.3;
/// A confident recall below this carries a warning (`low_confidence_threshold`).
pub const LOW_CONFIDENCE_THRESHOLD: f64 = 0.3;
/// At most this many subtopics are reported as covered.
const MAX_COVERAGE: usize = 30;
/// A memory last recalled this long ago counts as not fresh at all (one day).
const FRESHNESS_SPAN_SECS: f64 = 86_400.0;

/// `GET /api/v1/introspect`'s answer, fields in the original's order.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Introspection {
    pub topic: String,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub confidence: f64,
    /// Tags, then significant words, at most 30.
    #[schema(max_items = 30)]
    pub coverage: Vec<String>,
    pub gaps: Vec<String>,
    pub memory_count: usize,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub avg_freshness: f64,
    /// Recalled memories per zone (only zones that hold some).
    #[schema(schema_with = crate::http::schemas::zone_distribution)]
    pub zone_distribution: BTreeMap<String, usize>,
}

/// A memory whose `metadata.tags` introspection cannot read (the original crashes on it).
#[derive(Debug, PartialEq)]
pub struct BadTags {
    pub id: Uuid,
    pub found: &'static str,
}

/// `Introspector.introspect`: what the memories recalled for `topic` cover, how fresh and how
/// many they are, and how confident that makes us.
///
/// Gaps: the original lists graph neighbours of the recalled memories that the coverage misses.
/// Its graph is built only from embeddings, which its default install does not compute (no
/// sentence-transformers), so by default the graph is empty and the only gap ever reported is
/// the topic itself when nothing at all is known about it. We have no graph either.
pub fn introspect(topic: &str, sources: &[Source], now: f64) -> Result<Introspection, BadTags> {
    if sources.is_empty() {
        return Ok(Introspection {
            topic: topic.to_string(),
            confidence: 0.0,
            coverage: Vec::new(),
            gaps: vec![topic.to_string()],
            memory_count: 0,
            avg_freshness: 0.0,
            zone_distribution: BTreeMap::new(),
        });
    }
    let coverage = coverage(sources)?;
    let mut zone_distribution = BTreeMap::new();
    for s in sources {
        *zone_distribution.entry(s.zone.to_string()).or_insert(0) += 1;
    }
    let avg_freshness = sources
        .iter()
        .map(|s| (1.0 - (now - s.last_recalled_at) / FRESHNESS_SPAN_SECS).clamp(0.0, 1.0))
        .sum::<f64>()
        / sources.len() as f64;
    let coverage_ratio = (coverage.len() as f64 / 10.0).min(1.0);
    let density = (sources.len() as f64 / 10.0).min(1.0);
    let confidence = (ALPHA * coverage_ratio + BETA * avg_freshness + GAMMA * density).min(1.0);
    Ok(Introspection {
        topic: topic.to_string(),
        confidence: py_round(confidence, 3),
        coverage,
        gaps: Vec::new(),
        memory_count: sources.len(),
        avg_freshness: py_round(avg_freshness, 3),
        zone_distribution,
    })
}

/// `Introspector._extract_coverage`: the memories' tags and the significant words of their
/// content (longer than four letters, letters only), at most 30.
///
/// The original puts them all in a set and returns the first 30 in the set's (random) order;
/// we return the same set in a stable order: tags first, then words by how many times they
/// occur (first seen first on ties). With 30 or fewer candidates both give the same elements.
fn coverage(sources: &[Source]) -> Result<Vec<String>, BadTags> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for s in sources {
        match &s.tags {
            None => {}
            Some(Tags::Invalid(found)) => return Err(BadTags { id: s.id, found }),
            Some(Tags::List(tags)) => {
                for t in tags.iter() {
                    if seen.insert(t.clone()) {
                        out.push(t.clone());
                    }
                }
            }
        }
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut at: HashMap<String, usize> = HashMap::new();
    for s in sources {
        for w in coverage_words(&s.content) {
            match at.get(&w) {
                Some(&i) => counts[i].1 += 1,
                None => {
                    at.insert(w.clone(), counts.len());
                    counts.push((w, 1));
                }
            }
        }
    }
    // Stable: equal counts keep first-seen order, like `Counter.most_common`.
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    for (w, _) in counts {
        if out.len() >= MAX_COVERAGE {
            break;
        }
        if seen.insert(w.clone()) {
            out.push(w);
        }
    }
    out.truncate(MAX_COVERAGE);
    Ok(out)
}

/// The original's significant words: whitespace-separated, lower-cased, stripped of
/// `.,!?;:'"()[]{}`, longer than four characters and letters only.
fn coverage_words(content: &str) -> impl Iterator<Item = String> + '_ {
    const STRIP: &str = ".,!?;:'\"()[]{}";
    content.split_whitespace().filter_map(|w| {
        let w = w.to_lowercase();
        let cleaned = w.trim_matches(|c| STRIP.contains(c)).trim();
        (cleaned.chars().count() > 4 && cleaned.chars().all(char::is_alphabetic))
            .then(|| cleaned.to_string())
    })
}

/// `ConfidenceScorer.score`: how much to trust a recall, from how many memories came back, how
/// close to the core they sit and their scores; with the original's warnings.
pub fn recall_confidence(sources: &[Source], query: &str) -> (f64, Option<String>) {
    if sources.is_empty() {
        return (0.0, Some(format!("No memories found for '{query}'")));
    }
    let n = sources.len() as f64;
    let count_factor = (n / 10.0).min(1.0);
    let avg_zone = sources.iter().map(|s| f64::from(s.zone)).sum::<f64>() / n;
    let zone_factor = (1.0 - avg_zone / 4.0).max(0.0);
    let score_factor = (sources.iter().map(|s| s.score).sum::<f64>() / n).min(1.0);
    let confidence = py_round(
        (0.3 * count_factor + 0.4 * zone_factor + 0.3 * score_factor).clamp(0.0, 1.0),
        3,
    );
    let warning = (confidence < LOW_CONFIDENCE_THRESHOLD)
        .then(|| format!("Low confidence ({confidence:.2}) - limited knowledge on this topic"));
    (confidence, warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(content: &str, zone: u8, score: f64, last: f64, tags: Option<Tags>) -> Source {
        Source {
            id: Uuid::new_v4(),
            content: content.into(),
            zone,
            score,
            last_recalled_at: last,
            tags,
        }
    }

    #[test]
    fn nothing_known_is_a_gap_with_zero_confidence() {
        let r = introspect("volcanoes", &[], 0.0).unwrap();
        assert_eq!(r.gaps, ["volcanoes"]);
        assert_eq!((r.confidence, r.memory_count), (0.0, 0));
        assert!(r.zone_distribution.is_empty() && r.coverage.is_empty());
    }

    #[test]
    fn coverage_freshness_and_confidence_follow_the_original() {
        let now = 100_000.0;
        let s = [
            src(
                "Python packaging: wheels, sdists and (pyproject) files.",
                1,
                0.6,
                now,
                Some(Tags::List(Box::new(["tooling".into()]))),
            ),
            src(
                "Wheels are built with maturin",
                2,
                0.4,
                now - 43_200.0,
                None,
            ),
        ];
        let r = introspect("python", &s, now).unwrap();
        // Tags first, then words by frequency ("wheels" twice, then first seen first); words
        // of four letters or fewer left out; "pyproject" stripped of its parentheses.
        assert_eq!(
            r.coverage,
            [
                "tooling",
                "wheels",
                "python",
                "packaging",
                "sdists",
                "pyproject",
                "files",
                "built",
                "maturin"
            ]
        );
        assert_eq!(r.avg_freshness, 0.75);
        // 0.4 * 0.9 + 0.3 * 0.75 + 0.3 * 0.2 = 0.645
        assert_eq!(r.confidence, 0.645);
        assert_eq!(r.zone_distribution.get("1"), Some(&1));
        assert_eq!(r.zone_distribution.get("2"), Some(&1));
        assert!(r.gaps.is_empty());
    }

    #[test]
    fn unreadable_tags_are_reported_not_crashed_on() {
        let bad = src("x", 0, 0.5, 0.0, Some(Tags::Invalid("a number")));
        let id = bad.id;
        assert_eq!(
            introspect("x", &[bad], 0.0),
            Err(BadTags {
                id,
                found: "a number"
            })
        );
    }

    #[test]
    fn recall_confidence_and_warnings() {
        let (c, w) = recall_confidence(&[], "tea");
        assert_eq!(
            (c, w.as_deref()),
            (0.0, Some("No memories found for 'tea'"))
        );
        // One memory in zone 2 with score 0.4: 0.3*0.1 + 0.4*0.5 + 0.3*0.4 = 0.35.
        let (c, w) = recall_confidence(&[src("a", 2, 0.4, 0.0, None)], "a");
        assert_eq!((c, w), (0.35, None));
        // One in the belt with a low score: 0.03 + 0.1 + 0.03 = 0.16, with a warning.
        let (c, w) = recall_confidence(&[src("a", 3, 0.1, 0.0, None)], "a");
        assert_eq!(c, 0.16);
        assert_eq!(
            w.as_deref(),
            Some("Low confidence (0.16) - limited knowledge on this topic")
        );
    }
}
