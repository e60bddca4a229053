//! Reasoning over memories and spotting contradictions: the original's `MemoryReasoner` and
//! `ContradictionDetector` (`stellar_memory/reasoning.py`), rule-based as its default install
//! runs them (with `use_llm = true` it tries to build an LLM adapter, whose import fails, and
//! falls back to these rules).

use super::{long_words, py_round, word_runs, Source};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// The reasoner reads at most this many memories (`ReasoningConfig.max_sources`), whatever
/// `max_sources` the request asks to recall.
pub const MAX_SOURCES: usize = 10;

/// Words of four letters or more that say nothing about a subject (the original's list).
const STOP_WORDS: &[&str] = &[
    "that", "this", "with", "from", "have", "been", "were", "they", "their", "which", "about",
    "would", "there", "could", "other", "into", "more", "some", "than", "them", "very", "when",
    "what", "your", "each", "make", "like", "just", "over", "such", "also", "back", "after",
    "only", "most", "even", "made", "many",
];

/// (negation, affirmation) word pairs, in the original's order.
const NEGATION_PATTERNS: [(&str, &str); 7] = [
    ("not", "is"),
    ("never", "always"),
    ("no", "yes"),
    ("false", "true"),
    ("wrong", "right"),
    ("fail", "success"),
    ("bad", "good"),
];

/// One contradiction between two memories.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Contradiction {
    #[schema(format = Uuid)]
    pub memory_a_id: String,
    #[schema(format = Uuid)]
    pub memory_b_id: String,
    pub description: String,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub severity: f64,
}

/// `POST /api/v1/reason`'s answer, fields in the original's order.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Reasoning {
    pub query: String,
    pub insights: Vec<String>,
    pub contradictions: Vec<Contradiction>,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub confidence: f64,
    pub reasoning_chain: Vec<String>,
    /// How many recalled memories the reasoner read (at most 10).
    #[schema(maximum = 10)]
    pub source_count: usize,
}

/// A memory's words as the rules read them.
struct Words {
    /// Significant words (four letters or more, not stop words), first seen first.
    keywords: Vec<String>,
    keyword_set: HashSet<String>,
    /// Every word, for the negation patterns (`\bnot\b` matches exactly the word "not").
    all: HashSet<String>,
}

impl Words {
    fn of(text: &str) -> Words {
        let mut keywords = Vec::new();
        let mut keyword_set = HashSet::new();
        for w in long_words(text) {
            if !STOP_WORDS.contains(&w.as_str()) && keyword_set.insert(w.clone()) {
                keywords.push(w);
            }
        }
        Words {
            keywords,
            keyword_set,
            all: word_runs(text).into_iter().collect(),
        }
    }
}

/// `ContradictionDetector.detect`: every pair (in order) that the rules flag.
pub fn detect_contradictions(sources: &[Source]) -> Vec<Contradiction> {
    if sources.len() < 2 {
        return Vec::new();
    }
    let words: Vec<Words> = sources.iter().map(|s| Words::of(&s.content)).collect();
    let mut out = Vec::new();
    for i in 0..sources.len() {
        for j in i + 1..sources.len() {
            if let Some((description, severity)) = pair_rule(&words[i], &words[j]) {
                out.push(Contradiction {
                    memory_a_id: sources[i].id.to_string(),
                    memory_b_id: sources[j].id.to_string(),
                    description,
                    severity,
                });
            }
        }
    }
    out
}

/// `ContradictionDetector._detect_with_rules`: a shared subject, and a negation in one memory
/// but not the other (0.5), or a negation word in the first facing its opposite in the second
/// (0.4).
fn pair_rule(a: &Words, b: &Words) -> Option<(String, f64)> {
    let common: Vec<&String> = a
        .keywords
        .iter()
        .filter(|w| b.keyword_set.contains(*w))
        .collect();
    if common.is_empty() {
        return None;
    }
    // The original lists three of the shared words in set order; we take the first three in
    // the first memory's order.
    let shared = common
        .iter()
        .take(3)
        .map(|w| w.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let negated = |w: &Words| NEGATION_PATTERNS.iter().any(|(n, _)| w.all.contains(*n));
    if negated(a) != negated(b) && common.len() >= 2 {
        return Some((
            format!("Potential contradiction on '{shared}' (negation pattern)"),
            0.5,
        ));
    }
    NEGATION_PATTERNS
        .iter()
        .any(|(n, p)| a.all.contains(*n) && b.all.contains(*p))
        .then(|| {
            (
                format!("Antonym pattern detected with shared context: {shared}"),
                0.4,
            )
        })
}

/// `MemoryReasoner.reason` without an LLM: themes shared between the memories recalled for
/// `query`, how many mention the query's words, their contradictions, and a confidence.
pub fn reason(query: &str, sources: &[Source]) -> Reasoning {
    let sources = &sources[..sources.len().min(MAX_SOURCES)];
    if sources.is_empty() {
        return Reasoning {
            query: query.to_string(),
            insights: vec!["No relevant memories found for reasoning.".into()],
            contradictions: Vec::new(),
            confidence: 0.0,
            reasoning_chain: vec!["No data available".into()],
            source_count: 0,
        };
    }
    let (insights, reasoning_chain) = rules(query, sources);
    let contradictions = detect_contradictions(sources);
    let n = sources.len() as f64;
    let memory_factor = (n / MAX_SOURCES as f64).min(1.0);
    let insight_factor = (insights.len() as f64 / 3.0).min(1.0);
    let avg_zone = sources.iter().map(|s| f64::from(s.zone)).sum::<f64>() / n;
    let zone_factor = (1.0 - avg_zone / 4.0).max(0.0);
    Reasoning {
        query: query.to_string(),
        confidence: py_round(
            0.3 * memory_factor + 0.3 * insight_factor + 0.4 * zone_factor,
            3,
        ),
        insights,
        contradictions,
        reasoning_chain,
        source_count: sources.len(),
    }
}

/// `MemoryReasoner._reason_without_llm`: insights and the chain of steps that led to them.
fn rules(query: &str, sources: &[Source]) -> (Vec<String>, Vec<String>) {
    let mut insights = Vec::new();
    let mut chain = vec!["Rule-based reasoning (no LLM)".to_string()];
    let words: Vec<Words> = sources.iter().map(|s| Words::of(&s.content)).collect();

    // Keyword → the memories (by position) that use it, keywords first seen first.
    let mut order: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (i, w) in words.iter().enumerate() {
        for k in &w.keywords {
            match at.get(k.as_str()) {
                Some(&slot) => order[slot].1.push(i),
                None => {
                    at.insert(k, order.len());
                    order.push((k, vec![i]));
                }
            }
        }
    }
    let mut shared: Vec<&(&str, Vec<usize>)> = order.iter().filter(|(_, m)| m.len() >= 2).collect();
    // Stable: the most widely shared first, first seen first among equals.
    shared.sort_by_key(|s| std::cmp::Reverse(s.1.len()));
    for (kw, memories) in shared.into_iter().take(3) {
        let refs = memories
            .iter()
            .take(3)
            .map(|i| format!("memory {}", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        insights.push(format!("'{kw}' connects {refs} - related theme detected"));
        chain.push(format!(
            "Shared keyword '{kw}' across {} memories",
            memories.len()
        ));
    }

    let query_words: HashSet<String> = long_words(query)
        .into_iter()
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect();
    let relevant = sources
        .iter()
        .filter(|s| {
            long_words(&s.content)
                .iter()
                .any(|w| query_words.contains(w))
        })
        .count();
    if relevant > 0 {
        insights.push(format!(
            "{relevant} of {} memories directly mention query terms",
            sources.len()
        ));
        chain.push(format!(
            "Direct keyword overlap: {relevant}/{}",
            sources.len()
        ));
    }
    if insights.is_empty() {
        insights.push(format!(
            "Found {} potentially related memories, but no strong connections detected",
            sources.len()
        ));
        chain.push("No strong keyword overlap found".into());
    }
    (insights, chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn src(content: &str, zone: u8) -> Source {
        Source {
            id: Uuid::new_v4(),
            content: content.into(),
            zone,
            score: 0.5,
            last_recalled_at: 0.0,
            tags: None,
        }
    }

    #[test]
    fn negation_on_a_shared_subject_is_a_contradiction() {
        let s = [
            src("The deploy script runs tests", 2),
            src("The deploy script does not run tests", 2),
            src("Lunch was pasta", 2),
        ];
        let c = detect_contradictions(&s);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].memory_a_id, s[0].id.to_string());
        assert_eq!(c[0].memory_b_id, s[1].id.to_string());
        assert_eq!(
            c[0].description,
            "Potential contradiction on 'deploy, script, tests' (negation pattern)"
        );
        assert_eq!(c[0].severity, 0.5);
    }

    #[test]
    fn antonyms_need_the_negation_first() {
        // Both negate, one shared word: only the antonym rule can fire, and only when the
        // negation word is in the first memory and its opposite in the second.
        let a = src("The build is never green", 2);
        let b = src("The build always fails, no doubt", 2);
        let c = detect_contradictions(&[a.clone(), b.clone()]);
        assert_eq!(c.len(), 1);
        assert_eq!(
            c[0].description,
            "Antonym pattern detected with shared context: build"
        );
        assert_eq!(c[0].severity, 0.4);
        // One shared word is too little for the negation rule; "bad" then "good" is an antonym
        // pair, "good" then "bad" is not.
        let c = detect_contradictions(&[src("The build is bad", 2), src("The build is good", 2)]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].severity, 0.4);
        assert!(
            detect_contradictions(&[src("The build is good", 2), src("The build is bad", 2)])
                .is_empty()
        );
        assert!(detect_contradictions(&[src("build", 1)]).is_empty());
    }

    #[test]
    fn rule_based_insights() {
        let s = [
            src("Rust makes the engine fast", 0),
            src("The engine is written in Rust", 1),
            src("Coffee with Alice", 2),
        ];
        let r = reason("why is the engine fast", &s);
        assert_eq!(
            r.insights,
            [
                "'rust' connects memory 1, memory 2 - related theme detected",
                "'engine' connects memory 1, memory 2 - related theme detected",
                "2 of 3 memories directly mention query terms",
            ]
        );
        assert_eq!(
            r.reasoning_chain,
            [
                "Rule-based reasoning (no LLM)",
                "Shared keyword 'rust' across 2 memories",
                "Shared keyword 'engine' across 2 memories",
                "Direct keyword overlap: 2/3",
            ]
        );
        // 0.3 * 0.3 + 0.3 * 1.0 + 0.4 * (1 - 1/4) = 0.69
        assert_eq!(r.confidence, 0.69);
        assert_eq!(r.source_count, 3);

        let none = reason("anything", &[]);
        assert_eq!(none.insights, ["No relevant memories found for reasoning."]);
        assert_eq!(none.reasoning_chain, ["No data available"]);
        let weak = reason("zebra", &[src("alpha", 4)]);
        assert_eq!(
            weak.insights,
            ["Found 1 potentially related memories, but no strong connections detected"]
        );
        // At most ten sources, whatever was recalled.
        let many: Vec<Source> = (0..25).map(|i| src(&format!("note {i}"), 2)).collect();
        assert_eq!(reason("note", &many).source_count, MAX_SOURCES);
    }
}
