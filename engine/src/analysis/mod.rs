//! The original's analysis features (its "P9" modules), as pure functions over a tenant's
//! memories: metacognition (`introspect`, confident recall), rule-based reasoning and
//! contradiction detection, self-learning of the score weights, and the benchmark.
//!
//! Each module names the original function it follows (`stellar_memory/<file>.py`). The original
//! has LLM-backed variants of reasoning and contradiction detection; in its default
//! configuration they are never used (its `create_llm_adapter` import fails and it falls back to
//! rules), so the rules are what we implement. [`crate::engine`] gathers the memories (recalling
//! them first where the original does) and persists what self-learning changes.

pub mod benchmark;
pub mod learning;
pub mod metacognition;
pub mod pyrandom;
pub mod reasoning;

use crate::model::Tags;
use crate::space::Memory;
use uuid::Uuid;

/// A memory as the analyses read it. Zone, score and last recall are as they were before the
/// request's own recall touched the memory, so an analysis describes the stored knowledge rather
/// than the refresh it just gave it (in the original a recall changes neither zone nor score).
#[derive(Debug, Clone)]
pub struct Source {
    pub id: Uuid,
    pub content: String,
    pub zone: u8,
    pub score: f64,
    pub last_recalled_at: f64,
    pub tags: Option<Tags>,
}

impl From<&Memory> for Source {
    fn from(m: &Memory) -> Source {
        Source {
            id: m.id,
            content: m.content.clone(),
            zone: m.zone,
            score: m.score,
            last_recalled_at: m.last_recalled_at,
            tags: m.tags.clone(),
        }
    }
}

/// Python's `round(x, digits)`: correctly rounded from the exact binary value, ties to even.
pub fn py_round(x: f64, digits: usize) -> f64 {
    if !x.is_finite() {
        return x;
    }
    format!("{x:.digits$}").parse().unwrap_or(x)
}

/// Python's `\w`: letters, digits and the underscore.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The runs of `\w` characters in `text`, lower-cased, in order: what Python's
/// `re.findall(r'\b\w+\b', text.lower())` yields.
pub fn word_runs(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !is_word_char(c))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Python's `re.findall(r'\b\w{4,}\b', text.lower())`: the runs of at least four characters.
pub fn long_words(text: &str) -> Vec<String> {
    word_runs(text)
        .into_iter()
        .filter(|w| w.chars().count() >= 4)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(py_round(0.25, 1), 0.2);
        assert_eq!(py_round(0.35, 1), 0.3); // 0.35 is 0.34999… in binary
        assert_eq!(py_round(2.675, 2), 2.67);
        assert_eq!(py_round(0.1235, 3), 0.123); // 0.12349999…
        assert_eq!(py_round(1.0 / 3.0, 3), 0.333);
    }

    #[test]
    fn python_word_patterns() {
        assert_eq!(
            word_runs("Don't use snake_case, OK? 2024!"),
            ["don", "t", "use", "snake_case", "ok", "2024"]
        );
        assert_eq!(
            long_words("The café's menu: croissants, tea"),
            ["café", "menu", "croissants"]
        );
    }
}
