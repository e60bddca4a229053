//! The celestial model: how a memory is scored and which zone that score puts it in.
//!
//! Everything here is a pure function of a memory's facts and "now", so the zone and decay rules
//! are unit-tested without a clock, a database or a socket.

use serde::Serialize;

/// Number of zones: 0 core, 1 inner, 2 outer, 3 belt, 4 cloud.
pub const ZONES: usize = 5;
/// The outermost zone; decayed memories live here until recalled or forgotten.
pub const CLOUD: u8 = 4;
/// Slots per zone; `None` is unbounded.
pub const CAPACITIES: [Option<usize>; ZONES] = [Some(20), Some(100), Some(1000), None, None];
/// Lowest score that still belongs in zones 0..=3 (zone 4 takes everything below 0).
const ZONE_MIN_SCORE: [f64; 4] = [0.8, 0.5, 0.2, 0.0];

/// Score weights of the original system (recall, freshness, importance, context); its emotion
/// weight is 0 by default. Each tenant starts with these; `POST /api/v1/optimize` tunes them.
pub const W_RECALL: f64 = 0.30;
pub const W_FRESHNESS: f64 = 0.30;
pub const W_IMPORTANCE: f64 = 0.25;
pub const W_CONTEXT: f64 = 0.15;
pub const W_EMOTION: f64 = 0.0;
/// Recall counts beyond this add nothing: the recall term is log(1+n)/log(1+MAX_RECALL), capped.
pub const MAX_RECALL: f64 = 1000.0;
/// Freshness falls linearly from 1 (just recalled) to 0 over this many seconds. It is the
/// original's `decay_alpha = 1e-4 per second` with its cap of -1, normalised to [0, 1]: about
/// 2.8 hours, so "fresh" means "touched in this session", and zones drift outward within a day.
pub const FRESHNESS_HORIZON_SECS: f64 = 10_000.0;
pub const SECS_PER_DAY: f64 = 86_400.0;

/// The facts a score is computed from.
#[derive(Debug, Clone, Copy)]
pub struct ScoreInputs {
    pub recall_count: i64,
    pub last_recalled_at: f64,
    pub importance: f64,
    /// Relevance to the current context in [0, 1]: for us, how well the memory matched the last
    /// query that recalled it (the original used an embedding of the current context).
    pub context: f64,
    /// Emotion intensity in [0, 1] (the strongest of the six), 0 for a neutral memory.
    pub emotion: f64,
}

/// A tenant's score weights, under the original's names (`w_arbitrary` is the importance
/// weight). Serialised in the original's key order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Weights {
    pub w_recall: f64,
    pub w_freshness: f64,
    pub w_arbitrary: f64,
    pub w_context: f64,
    pub w_emotion: f64,
}

impl Default for Weights {
    fn default() -> Weights {
        Weights {
            w_recall: W_RECALL,
            w_freshness: W_FRESHNESS,
            w_arbitrary: W_IMPORTANCE,
            w_context: W_CONTEXT,
            w_emotion: W_EMOTION,
        }
    }
}

/// Recall term in [0, 1]: logarithmic, so the first recalls matter most, saturating at 1,000.
pub fn recall_term(recall_count: i64) -> f64 {
    if recall_count <= 0 {
        return 0.0;
    }
    ((1.0 + recall_count as f64).ln() / (1.0 + MAX_RECALL).ln()).min(1.0)
}

/// Freshness term in [0, 1] from the time since the memory was last recalled (or stored).
pub fn freshness_term(last_recalled_at: f64, now: f64) -> f64 {
    let age = (now - last_recalled_at).max(0.0);
    (1.0 - age / FRESHNESS_HORIZON_SECS).max(0.0)
}

/// The weighted score of a memory at `now`.
pub fn score(inputs: &ScoreInputs, now: f64, w: &Weights) -> f64 {
    w.w_recall * recall_term(inputs.recall_count)
        + w.w_freshness * freshness_term(inputs.last_recalled_at, now)
        + w.w_arbitrary * inputs.importance.clamp(0.0, 1.0)
        + w.w_context * inputs.context.clamp(0.0, 1.0)
        + w.w_emotion * inputs.emotion.clamp(0.0, 1.0)
}

/// The zone a score belongs to before capacities are considered.
pub fn natural_zone(score: f64) -> u8 {
    ZONE_MIN_SCORE
        .iter()
        .position(|min| score >= *min)
        .unwrap_or(ZONES - 1) as u8
}

/// Whether a memory has gone unrecalled long enough to decay (move to the cloud).
pub fn is_stale(last_recalled_at: f64, now: f64, days: f64) -> bool {
    now - last_recalled_at >= days * SECS_PER_DAY
}

/// Round to four decimals, as the original's responses do.
pub fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// The six-emotion vector of the original (`joy`, `sadness`, …), each in [0, 1].
#[derive(
    Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize, Default, utoipa::ToSchema,
)]
pub struct Emotion {
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub joy: f64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub sadness: f64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub anger: f64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub fear: f64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub surprise: f64,
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub disgust: f64,
}

impl Emotion {
    pub const NAMES: [&'static str; 6] = ["joy", "sadness", "anger", "fear", "surprise", "disgust"];

    fn values(&self) -> [f64; 6] {
        [
            self.joy,
            self.sadness,
            self.anger,
            self.fear,
            self.surprise,
            self.disgust,
        ]
    }

    /// The strongest emotion's value: the original's emotion intensity.
    pub fn intensity(&self) -> f64 {
        self.values().into_iter().fold(0.0, f64::max)
    }

    /// The strongest emotion's name (ties go to the first in `NAMES`, like Python's `max`).
    pub fn dominant(&self) -> &'static str {
        let v = self.values();
        let mut best = 0;
        for i in 1..6 {
            if v[i] > v[best] {
                best = i;
            }
        }
        Self::NAMES[best]
    }

    /// Rule-based analysis: the share of each emotion's cue words present in the text. `None`
    /// when no cue matched, so neutral memories carry `"emotion": null` rather than zeros.
    pub fn analyze(text: &str) -> Option<Emotion> {
        const CUES: [&[&str]; 6] = [
            &[
                "happy",
                "glad",
                "delighted",
                "excited",
                "wonderful",
                "great",
                "amazing",
                "love",
                "enjoy",
                "celebrate",
                "success",
                "win",
                "perfect",
                "fantastic",
            ],
            &[
                "sad",
                "unhappy",
                "depressed",
                "disappointed",
                "lonely",
                "miss",
                "lost",
                "cry",
                "grief",
                "sorry",
                "regret",
                "fail",
            ],
            &[
                "angry",
                "furious",
                "hate",
                "rage",
                "annoyed",
                "frustrated",
                "irritated",
                "outraged",
                "damn",
            ],
            &[
                "afraid",
                "scared",
                "terrified",
                "worried",
                "anxious",
                "panic",
                "nervous",
                "threat",
                "danger",
                "risk",
            ],
            &[
                "surprised",
                "shocked",
                "unexpected",
                "wow",
                "unbelievable",
                "incredible",
                "sudden",
                "astonished",
            ],
            &[
                "disgusting",
                "gross",
                "awful",
                "terrible",
                "horrible",
                "revolting",
                "nasty",
                "creepy",
            ],
        ];
        let words: Vec<String> = crate::index::tokenize(text).collect();
        let mut v = [0.0; 6];
        for (i, cues) in CUES.iter().enumerate() {
            let hits = cues
                .iter()
                .filter(|c| words.iter().any(|w| w == *c))
                .count();
            // Two distinct cue words already make an emotion clear; more do not make it stronger.
            v[i] = (hits as f64 / 2.0).min(1.0);
        }
        if v.iter().all(|x| *x == 0.0) {
            return None;
        }
        Some(Emotion {
            joy: v[0],
            sadness: v[1],
            anger: v[2],
            fear: v[3],
            surprise: v[4],
            disgust: v[5],
        })
    }
}

/// A memory's `metadata.tags`, kept in RAM for introspection's coverage.
#[derive(Debug, Clone, PartialEq)]
pub enum Tags {
    /// Usable tags: a list of strings, a single string (one tag, as the original's own
    /// auto-encryption reads it), or an object's keys (what iterating a dict gives in Python).
    List(Box<[String]>),
    /// Anything else (a number, `null`, a list holding non-strings): the original crashes on
    /// it when introspecting; we name what was found.
    Invalid(&'static str),
}

impl Tags {
    /// The tags of a metadata object; `None` when it has no `tags` key.
    pub fn of(metadata: &serde_json::Value) -> Option<Tags> {
        use serde_json::Value;
        let kind = |v: &Value| match v {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "a list",
            Value::Object(_) => "an object",
        };
        Some(match metadata.get("tags")? {
            Value::String(s) => Tags::List(Box::new([s.clone()])),
            Value::Object(o) => Tags::List(o.keys().cloned().collect()),
            Value::Array(items) => match items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or(v))
                .collect::<Result<Box<[String]>, &Value>>()
            {
                Ok(list) => Tags::List(list),
                Err(v) => Tags::Invalid(match kind(v) {
                    "null" => "a list holding null",
                    "a boolean" => "a list holding a boolean",
                    "a number" => "a list holding a number",
                    "a list" => "a list holding a list",
                    _ => "a list holding an object",
                }),
            },
            other => Tags::Invalid(kind(other)),
        })
    }
}

/// `auto_evaluate`: estimate importance from the text alone (the original's rule-based evaluator
/// without an LLM): facts, feelings, actions and explicit "remember this" each raise it.
pub fn evaluate_importance(text: &str) -> f64 {
    let words: Vec<String> = crate::index::tokenize(text).collect();
    let has = |list: &[&str]| list.iter().any(|c| words.iter().any(|w| w == c));
    let factual = words
        .iter()
        .any(|w| w.chars().all(|c| c.is_ascii_digit()) && w.len() >= 2)
        || has(&["fact", "data", "statistic", "number", "result", "date"]);
    let emotional = Emotion::analyze(text).is_some() || text.contains("!!");
    let actionable = has(&[
        "todo",
        "must",
        "should",
        "need",
        "deadline",
        "urgent",
        "asap",
        "reminder",
        "schedule",
        "meeting",
        "appointment",
        "task",
    ]);
    let explicit = has(&[
        "important",
        "critical",
        "remember",
        "essential",
        "vital",
        "key",
        "password",
        "secret",
        "never",
    ]);
    let b = |x: bool| if x { 1.0_f64 } else { 0.0 };
    // Nothing notable still leaves a memory worth keeping a while: floor at 0.1.
    let score: f64 =
        0.1 + 0.25 * b(factual) + 0.2 * b(emotional) + 0.3 * b(actionable) + 0.25 * b(explicit);
    score.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(recall_count: i64, last: f64, importance: f64, context: f64) -> ScoreInputs {
        ScoreInputs {
            recall_count,
            last_recalled_at: last,
            importance,
            context,
            emotion: 0.0,
        }
    }

    fn score(i: &ScoreInputs, now: f64) -> f64 {
        super::score(i, now, &Weights::default())
    }

    #[test]
    fn weights_sum_to_one_and_bound_the_score() {
        assert!((W_RECALL + W_FRESHNESS + W_IMPORTANCE + W_CONTEXT - 1.0).abs() < 1e-12);
        let best = score(&inputs(1_000_000, 100.0, 1.0, 1.0), 100.0);
        assert!((best - 1.0).abs() < 1e-12, "{best}");
        let worst = score(&inputs(0, 0.0, 0.0, 0.0), 1e9);
        assert_eq!(worst, 0.0);
    }

    #[test]
    fn recall_term_is_logarithmic_and_saturates_at_1000() {
        assert_eq!(recall_term(0), 0.0);
        assert!(recall_term(1) > 0.09 && recall_term(1) < 0.11);
        assert!(recall_term(10) < recall_term(100));
        assert!((recall_term(1000) - 1.0).abs() < 1e-12);
        assert_eq!(recall_term(5000), 1.0);
    }

    #[test]
    fn freshness_decays_with_time_since_last_recall() {
        assert_eq!(freshness_term(1000.0, 1000.0), 1.0);
        assert!((freshness_term(0.0, 5000.0) - 0.5).abs() < 1e-12);
        assert_eq!(freshness_term(0.0, 20_000.0), 0.0);
        // A clock that runs backwards must not produce freshness above 1.
        assert_eq!(freshness_term(10.0, 0.0), 1.0);
    }

    #[test]
    fn fresh_memory_with_default_importance_lands_in_outer_zone() {
        let s = score(&inputs(0, 0.0, 0.5, 0.0), 0.0);
        assert!((s - 0.425).abs() < 1e-12);
        assert_eq!(natural_zone(s), 2);
        // Important and fresh: inner. The same memory hours later: belt.
        assert_eq!(natural_zone(score(&inputs(0, 0.0, 1.0, 0.0), 0.0)), 1);
        assert_eq!(natural_zone(score(&inputs(0, 0.0, 0.5, 0.0), 20_000.0)), 3);
    }

    #[test]
    fn zone_boundaries() {
        assert_eq!(natural_zone(1.0), 0);
        assert_eq!(natural_zone(0.8), 0);
        assert_eq!(natural_zone(0.7999), 1);
        assert_eq!(natural_zone(0.5), 1);
        assert_eq!(natural_zone(0.2), 2);
        assert_eq!(natural_zone(0.1999), 3);
        assert_eq!(natural_zone(0.0), 3);
        assert_eq!(natural_zone(-0.01), 4);
    }

    #[test]
    fn staleness_in_days() {
        assert!(!is_stale(0.0, 29.9 * SECS_PER_DAY, 30.0));
        assert!(is_stale(0.0, 30.0 * SECS_PER_DAY, 30.0));
    }

    #[test]
    fn emotion_analysis_and_dominant() {
        assert_eq!(Emotion::analyze("The meeting is at noon"), None);
        let e = Emotion::analyze("I was so happy and excited, but a little worried").unwrap();
        assert_eq!(e.joy, 1.0);
        assert_eq!(e.fear, 0.5);
        assert_eq!(e.dominant(), "joy");
        assert_eq!(
            Emotion::analyze("a terrible, awful day")
                .unwrap()
                .dominant(),
            "disgust"
        );
    }

    #[test]
    fn auto_evaluation_ranks_notable_text_higher() {
        let plain = evaluate_importance("the sky was blue");
        let notable =
            evaluate_importance("Important: remember the deadline on 2024 03 01, we must ship");
        assert!(plain < 0.2, "{plain}");
        assert!(notable > 0.7, "{notable}");
        assert!(notable <= 1.0);
    }
}
