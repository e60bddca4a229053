//! Self-learning of the score weights from recall patterns: the original's `PatternCollector`
//! and `WeightOptimizer` (`stellar_memory/self_learning.py`) with the default
//! `SelfLearningConfig` (learning rate 0.03, at most 0.1 per step, at least 50 recall logs).
//!
//! The original also weighs user feedback on recalls; its REST API has no way to give any, so
//! every log's feedback is "none" there, and here.

use super::py_round;
use crate::model::Weights;
use crate::storage::LoggedRecall;
use serde::Serialize;
use std::collections::HashSet;

/// Recall logs needed before optimizing (`min_logs`).
pub const MIN_LOGS: usize = 50;
/// How many of a tenant's newest recall logs are read (the original's `get_logs(limit=1000)`).
pub const LOGS_READ: usize = 1000;
const LEARNING_RATE: f64 = 0.03;
const MAX_DELTA: f64 = 0.1;
/// Words in a query that reveal interest in emotions.
const EMOTION_KEYWORDS: [&str; 12] = [
    "happy",
    "sad",
    "angry",
    "afraid",
    "surprised",
    "love",
    "hate",
    "frustrated",
    "excited",
    "anxious",
    "relieved",
    "joy",
];

/// `PatternCollector.analyze_patterns`: preferences read from the recall logs, each in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Patterns {
    pub freshness_preference: f64,
    pub emotion_preference: f64,
    pub recall_frequency: f64,
    pub topic_diversity: f64,
}

/// `POST /api/v1/optimize`'s answer, fields in the original's order.
#[derive(Debug, Serialize, PartialEq, utoipa::ToSchema)]
pub struct OptimizeReport {
    pub before_weights: Weights,
    pub after_weights: Weights,
    pub improvement: String,
    pub pattern: String,
    pub simulation_score: f64,
    pub rolled_back: bool,
}

/// How many ids a logged recall returned.
fn result_count(log: &LoggedRecall) -> usize {
    serde_json::from_str::<Vec<serde_json::Value>>(&log.result_ids).map_or(0, |v| v.len())
}

pub fn analyze(logs: &[LoggedRecall]) -> Patterns {
    if logs.is_empty() {
        return Patterns {
            freshness_preference: 0.0,
            emotion_preference: 0.0,
            recall_frequency: 0.0,
            topic_diversity: 0.0,
        };
    }
    let n = logs.len() as f64;
    let avg_results = logs.iter().map(result_count).sum::<usize>() as f64 / n;
    let unique: HashSet<String> = logs
        .iter()
        .map(|l| l.query.to_lowercase().trim().to_string())
        .collect();
    let emotional = logs
        .iter()
        .filter(|l| {
            let q = l.query.to_lowercase();
            EMOTION_KEYWORDS.iter().any(|k| q.contains(k))
        })
        .count();
    Patterns {
        // Without feedback the original's freshness preference is neutral.
        freshness_preference: 0.5,
        emotion_preference: py_round((emotional as f64 / n).min(1.0), 3),
        recall_frequency: py_round((avg_results / 10.0).min(1.0), 3),
        topic_diversity: py_round((unique.len() as f64 / n).min(1.0), 3),
    }
}

/// The outcome of one optimization: the report, and the weights to apply (`None` when the
/// candidate did no better and the current weights stay).
#[derive(Debug, PartialEq)]
pub struct Optimization {
    pub report: OptimizeReport,
    pub apply: Option<Weights>,
}

/// `WeightOptimizer.optimize`: nudge the weights the patterns call for, keep each in
/// [0.01, 0.8], renormalise to 1, and apply the result only if it simulates at least as well.
/// `logs` are newest first; the caller has checked there are at least [`MIN_LOGS`].
pub fn optimize(before: Weights, logs: &[LoggedRecall]) -> Optimization {
    let p = analyze(logs);
    let step = LEARNING_RATE.min(MAX_DELTA);
    let mut w = before;
    if p.freshness_preference > 0.6 {
        w.w_freshness += step;
    } else if p.freshness_preference < 0.4 {
        w.w_freshness -= step;
    }
    if p.emotion_preference > 0.3 {
        w.w_emotion += step;
    }
    if p.recall_frequency > 0.6 {
        w.w_recall += step;
    }
    if p.topic_diversity > 0.7 {
        w.w_context += step;
    }
    let after = normalize(clamp(w));
    let old_score = simulate(&before, logs);
    let new_score = simulate(&after, logs);
    let pattern = describe(&p);
    if new_score >= old_score {
        Optimization {
            report: OptimizeReport {
                before_weights: before,
                after_weights: after,
                improvement: format!("Score improved: {old_score:.3} -> {new_score:.3}"),
                pattern,
                simulation_score: new_score,
                rolled_back: false,
            },
            apply: Some(after),
        }
    } else {
        Optimization {
            report: OptimizeReport {
                before_weights: before,
                after_weights: before,
                improvement: format!("No improvement: {old_score:.3} vs {new_score:.3}"),
                pattern,
                simulation_score: old_score,
                rolled_back: true,
            },
            apply: None,
        }
    }
}

fn each(w: Weights, f: impl Fn(f64) -> f64) -> Weights {
    Weights {
        w_recall: f(w.w_recall),
        w_freshness: f(w.w_freshness),
        w_arbitrary: f(w.w_arbitrary),
        w_context: f(w.w_context),
        w_emotion: f(w.w_emotion),
    }
}

fn clamp(w: Weights) -> Weights {
    each(w, |v| v.clamp(0.01, 0.8))
}

fn normalize(w: Weights) -> Weights {
    let total = w.w_recall + w.w_freshness + w.w_arbitrary + w.w_context + w.w_emotion;
    if total == 0.0 {
        return each(w, |_| py_round(1.0 / 5.0, 4));
    }
    each(w, |v| py_round(v / total, 4))
}

/// `WeightOptimizer._simulate`: the original's heuristic "match score" of a set of weights over
/// the logs: queries that returned more results count more, and so does a larger share of
/// context and importance in the weights. It reads the last 100 of the logs it was given
/// (newest first), that is the oldest 100 of the newest 1,000.
fn simulate(w: &Weights, logs: &[LoggedRecall]) -> f64 {
    if logs.is_empty() {
        return 0.0;
    }
    let tail = &logs[logs.len().saturating_sub(100)..];
    let diversity = w.w_context + w.w_arbitrary;
    tail.iter()
        .map(|l| {
            let base = (result_count(l) as f64 / 5.0).min(1.0);
            (base * (0.5 + diversity)).min(1.0)
        })
        .sum::<f64>()
        / tail.len() as f64
}

fn describe(p: &Patterns) -> String {
    let mut parts = Vec::new();
    if p.freshness_preference > 0.6 {
        parts.push("freshness_preferred");
    }
    if p.emotion_preference > 0.3 {
        parts.push("emotion_sensitive");
    }
    if p.recall_frequency > 0.6 {
        parts.push("high_recall_frequency");
    }
    if p.topic_diversity > 0.7 {
        parts.push("diverse_topics");
    }
    if parts.is_empty() {
        "balanced".into()
    } else {
        parts.join(", ")
    }
}

/// `WeightOptimizer.rollback`: given the newest two history entries (newest first), the weights
/// to go back to, or `None` to keep the current ones (fewer than two entries).
pub fn rollback_target(history: &[Weights]) -> Option<Weights> {
    history.get(1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(query: &str, results: usize) -> LoggedRecall {
        let ids: Vec<String> = (0..results).map(|i| format!("id{i}")).collect();
        LoggedRecall {
            query: query.into(),
            result_ids: serde_json::to_string(&ids).unwrap(),
        }
    }

    #[test]
    fn repeated_queries_do_not_improve_and_roll_back() {
        // One query asked 50 times with 3 results: nothing stands out. Clamping lifts the
        // emotion weight to 0.01, which shrinks context + importance: the candidate simulates
        // worse, so the weights stay.
        let logs: Vec<LoggedRecall> = (0..50).map(|_| log("tea", 3)).collect();
        let o = optimize(Weights::default(), &logs);
        assert_eq!(o.apply, None);
        let r = o.report;
        assert!(r.rolled_back);
        assert_eq!(r.pattern, "balanced");
        assert_eq!(r.after_weights, Weights::default());
        // base 0.6 * (0.5 + 0.4) = 0.54 before; 0.6 * (0.5 + 0.396) = 0.5376 after.
        assert_eq!(r.improvement, "No improvement: 0.540 vs 0.538");
        assert!((r.simulation_score - 0.54).abs() < 1e-12);
    }

    #[test]
    fn diverse_topics_raise_the_context_weight() {
        let logs: Vec<LoggedRecall> = (0..60).map(|i| log(&format!("topic {i}"), 2)).collect();
        let o = optimize(Weights::default(), &logs);
        let after = o.apply.expect("applied");
        assert_eq!(o.report.pattern, "diverse_topics");
        assert!(!o.report.rolled_back);
        // 0.3, 0.3, 0.25, 0.18, 0.01 over 1.04.
        assert_eq!(
            after,
            Weights {
                w_recall: 0.2885,
                w_freshness: 0.2885,
                w_arbitrary: 0.2404,
                w_context: 0.1731,
                w_emotion: 0.0096
            }
        );
        assert!(o
            .report
            .improvement
            .starts_with("Score improved: 0.360 -> 0.365"));
    }

    #[test]
    fn emotional_and_busy_recalls() {
        let logs: Vec<LoggedRecall> = (0..50)
            .map(|i| log(&format!("when was I happy {}", i % 5), 8))
            .collect();
        let p = analyze(&logs);
        assert_eq!(p.emotion_preference, 1.0);
        assert_eq!(p.recall_frequency, 0.8);
        assert_eq!(p.topic_diversity, 0.1);
        assert_eq!(describe(&p), "emotion_sensitive, high_recall_frequency");
    }

    #[test]
    fn rollback_goes_to_the_second_newest_entry() {
        let a = Weights::default();
        let b = Weights { w_recall: 0.5, ..a };
        assert_eq!(rollback_target(&[]), None);
        assert_eq!(rollback_target(&[b]), None);
        assert_eq!(rollback_target(&[b, a]), Some(a));
    }
}
