//! The original's benchmark (`stellar_memory/benchmark.py`: `StandardDataset`,
//! `MemoryBenchmark.run`): a reproducible synthetic dataset in five categories is stored,
//! category keywords are recalled (top 10), and one reorbit is timed.
//!
//! The original stores the dataset into the live memory for good. We run it on a scratch copy
//! of the tenant's space (its memories compete in recall as they do in the original, and count
//! in `total_memories`), so nothing is written and the tenant's memories are left as they were.
//! Latencies are therefore those of the in-memory engine path (scoring, zones, index, ranking),
//! without the database commit.

use super::py_round;
use super::pyrandom::PyRandom;
use crate::model::Emotion;
use crate::space::{Memory, Space};
use serde::Serialize;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

const CATEGORIES: [&str; 5] = ["daily", "work", "tech", "emotion", "code"];

const TEMPLATES: [[&str; 5]; 5] = [
    [
        "I had coffee with {name} at the cafe this morning",
        "The weather today was {adj} and {adj2}",
        "Went grocery shopping and bought {item} and {item2}",
        "Watched a movie called {title} last night",
        "Took a walk in the park near {place}",
    ],
    [
        "Meeting with {name} about the {topic} project",
        "Deadline for {topic} report is next {day}",
        "New team member {name} joined the {topic} team",
        "Completed the {topic} feature implementation",
        "Code review feedback on {topic} module was positive",
    ],
    [
        "Learned about {tech} framework for building {topic}",
        "{tech} version {ver} was released with new features",
        "The {tech} documentation recommends using {pattern}",
        "Benchmark shows {tech} is {num}x faster than alternatives",
        "Migrated from {tech} to {tech2} for better performance",
    ],
    [
        "Felt really happy when {name} surprised me with {item}",
        "Frustrated with the {topic} bug that took hours to fix",
        "Excited about the upcoming {topic} conference",
        "Anxious about the {topic} presentation tomorrow",
        "Relieved that the {topic} deployment went smoothly",
    ],
    [
        "def calculate_{func}(data): return sum(data) / len(data)",
        "class {cls}Manager: def __init__(self): self.items = []",
        "async def fetch_{func}(url): return await client.get(url)",
        "SELECT * FROM {table} WHERE status = 'active' ORDER BY created_at",
        // Not an f-string in the original: the doubled braces stay as they are.
        "const {func} = ({param}) => {{ return {param}.filter(x => x > 0) }}",
    ],
];

/// The words each category's queries are drawn from.
const KEYWORDS: [&[&str]; 5] = [
    &["coffee", "weather", "morning", "walk", "movie"],
    &["meeting", "deadline", "team", "project", "review"],
    &["framework", "version", "documentation", "benchmark"],
    &["happy", "frustrated", "excited", "anxious", "relieved"],
    &["function", "class", "async", "SELECT", "const"],
];

const NAMES: [&str; 8] = [
    "Alice", "Bob", "Carol", "David", "Eve", "Frank", "Grace", "Henry",
];
const TOPICS: [&str; 8] = [
    "memory", "search", "auth", "deploy", "cache", "sync", "graph", "api",
];
const TECHS: [&str; 8] = [
    "React",
    "Python",
    "Rust",
    "Go",
    "Docker",
    "Redis",
    "PostgreSQL",
    "FastAPI",
];
const ITEMS: [&str; 8] = [
    "milk",
    "bread",
    "coffee",
    "laptop",
    "book",
    "headphones",
    "cake",
    "flowers",
];
const ADJS: [&str; 8] = [
    "sunny",
    "rainy",
    "cold",
    "warm",
    "windy",
    "cloudy",
    "beautiful",
    "foggy",
];

/// (memories, queries) of a dataset; an unknown name gets the standard sizes.
pub fn sizes(dataset: &str) -> (usize, usize) {
    match dataset {
        "small" => (100, 20),
        "large" => (10_000, 500),
        _ => (1_000, 100),
    }
}

/// One generated memory.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchMemory {
    pub content: String,
    pub importance: f64,
    pub category: usize,
}

/// `StandardDataset`: the memories and queries (query text, expected category) for a name and
/// seed, drawn from Python's generator in the original's order.
pub fn dataset(name: &str, seed: i64) -> (Vec<BenchMemory>, Vec<(String, usize)>) {
    let (count, query_count) = sizes(name);
    let mut rng = PyRandom::new(seed);
    let memories = (0..count)
        .map(|i| {
            let cat = i % CATEGORIES.len();
            let template = *rng.choice(&TEMPLATES[cat]);
            let content = fill(template, &mut rng);
            let importance = py_round(rng.uniform(0.1, 0.9), 2);
            BenchMemory {
                content,
                importance,
                category: cat,
            }
        })
        .collect();
    let queries = (0..query_count)
        .map(|i| {
            let cat = i % CATEGORIES.len();
            (rng.choice(KEYWORDS[cat]).to_string(), cat)
        })
        .collect();
    (memories, queries)
}

/// `StandardDataset._fill_template`: every replacement is drawn (in this order) whatever the
/// template, then each placeholder's first occurrence is replaced.
fn fill(template: &str, rng: &mut PyRandom) -> String {
    let mut pick = |list: &[&str]| rng.choice(list).to_string();
    let name = pick(&NAMES);
    let topic = pick(&TOPICS);
    let tech = pick(&TECHS);
    let tech2 = pick(&TECHS);
    let item = pick(&ITEMS);
    let item2 = pick(&ITEMS);
    let adj = pick(&ADJS);
    let adj2 = pick(&ADJS);
    let place = pick(&["river", "hill", "garden", "lake"]);
    let title = pick(&["Inception", "Matrix", "Arrival", "Dune"]);
    let day = pick(&["Monday", "Friday", "Wednesday"]);
    let ver = format!("{}.{}", rng.randint(1, 5), rng.randint(0, 9));
    let pattern = rng.choice(&["hooks", "middleware", "plugins"]).to_string();
    let num = rng.randint(2, 10).to_string();
    let mut pick = |list: &[&str]| rng.choice(list).to_string();
    let func = pick(&["average", "total", "count", "max"]);
    let cls = pick(&["Data", "Task", "User", "Event"]);
    let table = pick(&["users", "orders", "events", "logs"]);
    let param = pick(&["items", "data", "values", "records"]);
    let replacements = [
        ("{name}", name),
        ("{topic}", topic),
        ("{tech}", tech),
        ("{tech2}", tech2),
        ("{item}", item),
        ("{item2}", item2),
        ("{adj}", adj),
        ("{adj2}", adj2),
        ("{place}", place),
        ("{title}", title),
        ("{day}", day),
        ("{ver}", ver),
        ("{pattern}", pattern),
        ("{num}", num),
        ("{func}", func),
        ("{cls}", cls),
        ("{table}", table),
        ("{param}", param),
    ];
    let mut out = template.to_string();
    for (key, value) in replacements {
        out = out.replacen(key, &value, 1);
    }
    out
}

/// `POST /api/v1/benchmark`'s request.
#[derive(Debug, Clone)]
pub struct BenchmarkParams {
    pub queries: usize,
    pub dataset: String,
    pub seed: i64,
}

/// `POST /api/v1/benchmark`'s answer, fields in the original's order.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BenchmarkReport {
    pub recall_at_5: f64,
    pub recall_at_10: f64,
    pub precision_at_5: f64,
    pub avg_store_latency_ms: f64,
    pub avg_recall_latency_ms: f64,
    pub avg_reorbit_latency_ms: f64,
    pub total_memories: usize,
    pub dataset_name: String,
    pub queries_run: usize,
}

/// `MemoryBenchmark.run` on `space` (a scratch copy): store the dataset, recall each query's
/// top 10 (as a recall does: counted, refreshed, re-placed), reorbit once. Queries stop early
/// once `budget` has passed; `queries_run` says how many ran.
pub fn run(
    space: &mut Space,
    params: &BenchmarkParams,
    now: f64,
    (decay_days, forget_days): (f64, f64),
    budget: Duration,
) -> BenchmarkReport {
    let started = Instant::now();
    let (memories, queries) = dataset(&params.dataset, params.seed);
    let mut category: HashMap<Uuid, usize> = HashMap::with_capacity(memories.len());
    let mut store_ms = Vec::with_capacity(memories.len());
    for m in memories {
        let t0 = Instant::now();
        let id = Uuid::new_v4();
        let emotion = Emotion::analyze(&m.content);
        space.insert(Memory::new(id, m.content, m.importance, emotion, now), now);
        store_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        category.insert(id, m.category);
    }

    let mut recall_ms = Vec::new();
    let (mut hits5, mut hits10, mut precise5) = (0usize, 0usize, 0usize);
    for (query, cat) in queries.iter().take(params.queries) {
        if started.elapsed() > budget {
            break;
        }
        let t0 = Instant::now();
        let hits = space.search(query, None, 10);
        for hit in &hits {
            space.touch(hit, now);
        }
        recall_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        let is_cat = |i: usize| hits.get(i).and_then(|h| category.get(&h.id)) == Some(cat);
        let in5 = (0..5).filter(|&i| is_cat(i)).count();
        precise5 += in5;
        hits5 += usize::from(in5 > 0);
        hits10 += usize::from((0..10).any(is_cat));
    }

    let t0 = Instant::now();
    space.reorbit(now, decay_days, forget_days);
    let reorbit_ms = t0.elapsed().as_secs_f64() * 1e3;

    let queries_run = recall_ms.len();
    let total_q = queries_run.max(1) as f64;
    let avg = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    BenchmarkReport {
        recall_at_5: hits5 as f64 / total_q,
        recall_at_10: hits10 as f64 / total_q,
        precision_at_5: precise5 as f64 / (total_q * 5.0),
        avg_store_latency_ms: py_round(avg(&store_ms), 2),
        avg_recall_latency_ms: py_round(avg(&recall_ms), 2),
        avg_reorbit_latency_ms: py_round(reorbit_ms, 2),
        total_memories: space.len(),
        dataset_name: params.dataset.clone(),
        queries_run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_is_the_originals() {
        // python3 -c "from stellar_memory.benchmark import StandardDataset as S;
        //   d = S('small', 42); m = d.generate_memories(); q = d.generate_queries()"
        let (m, q) = dataset("small", 42);
        assert_eq!((m.len(), q.len()), (100, 20));
        assert_eq!(
            m[0],
            BenchMemory {
                content: "I had coffee with Alice at the cafe this morning".into(),
                importance: 0.57,
                category: 0
            }
        );
        assert_eq!(m[1].content, "Meeting with Carol about the graph project");
        assert_eq!(m[1].importance, 0.16);
        assert_eq!(
            m[2].content,
            "The Python documentation recommends using hooks"
        );
        assert_eq!(
            m[99].content,
            "class EventManager: def __init__(self): self.items = []"
        );
        assert_eq!(m[99].importance, 0.7);
        let words: Vec<&str> = q[..5].iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(
            words,
            ["coffee", "deadline", "documentation", "frustrated", "const"]
        );
        assert_eq!(sizes("huge"), (1_000, 100));
    }

    #[test]
    fn run_measures_recall_on_a_scratch_space() {
        let mut space = Space::default();
        let params = BenchmarkParams {
            queries: 10,
            dataset: "small".into(),
            seed: 42,
        };
        let r = run(
            &mut space,
            &params,
            1e9,
            (30.0, 90.0),
            Duration::from_secs(60),
        );
        assert_eq!((r.total_memories, r.queries_run), (100, 10));
        assert_eq!(r.dataset_name, "small");
        assert!(r.recall_at_5 > 0.5 && r.recall_at_5 <= r.recall_at_10);
        assert!(r.precision_at_5 <= r.recall_at_5);
        // A spent budget still stores and reorbits, but runs no query.
        let mut space = Space::default();
        let r = run(&mut space, &params, 1e9, (30.0, 90.0), Duration::ZERO);
        assert_eq!((r.total_memories, r.queries_run), (100, 0));
    }
}
