//! `stellar-bench engine`: store and recall throughput and latency of the memory engine at
//! several sizes of one tenant.
//!
//! For each size N the benchmark starts the given engine binary (the release build) on free ports
//! with a fresh SQLite data directory, then:
//! 1. fills the tenant to N memories with 64 concurrent keep-alive clients (store throughput and
//!    latency under load);
//! 2. runs 1,000 recalls one at a time (recall latency without queueing) and 4,000 more from 16
//!    concurrent clients (recall throughput);
//! 3. runs 1,000 stores one at a time (store latency at size N).
//!
//! Memory texts are 8–24 words drawn from a 5,000-word vocabulary with a Zipf distribution, the
//! shape of natural text, so common words have long posting lists; queries are two words drawn
//! the same way. Everything is seeded, so runs are comparable.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const STORE_CLIENTS: usize = 64;
const RECALL_CLIENTS: usize = 16;
const SEQUENTIAL_RECALLS: usize = 1_000;
const CONCURRENT_RECALLS: usize = 4_000;
const SEQUENTIAL_STORES: usize = 1_000;
const VOCABULARY: usize = 5_000;

/// xorshift64*: small, fast and deterministic; statistical quality is irrelevant here.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Text generator: pseudo-words with Zipf(1) frequencies.
struct Corpus {
    words: Vec<String>,
    cumulative: Vec<f64>,
}

impl Corpus {
    fn new() -> Corpus {
        const SYLLABLES: [&str; 20] = [
            "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "ri", "mo", "ta",
            "le", "xi", "bo", "de", "fu", "gi",
        ];
        let mut rng = Rng(0x5EED);
        let mut words = Vec::with_capacity(VOCABULARY);
        let mut seen = std::collections::HashSet::new();
        while words.len() < VOCABULARY {
            let n = 2 + rng.below(3);
            let w: String = (0..n)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len())])
                .collect();
            if seen.insert(w.clone()) {
                words.push(w);
            }
        }
        let mut total = 0.0;
        let cumulative = (1..=VOCABULARY)
            .map(|rank| {
                total += 1.0 / rank as f64;
                total
            })
            .collect();
        Corpus { words, cumulative }
    }

    fn word(&self, rng: &mut Rng) -> &str {
        let target = rng.unit() * self.cumulative[VOCABULARY - 1];
        let i = self
            .cumulative
            .partition_point(|c| *c < target)
            .min(VOCABULARY - 1);
        &self.words[i]
    }

    fn text(&self, rng: &mut Rng) -> String {
        let n = 8 + rng.below(17);
        (0..n).map(|_| self.word(rng)).collect::<Vec<_>>().join(" ")
    }

    fn query(&self, rng: &mut Rng) -> String {
        format!("{} {}", self.word(rng), self.word(rng))
    }
}

/// The engine process under test; stopped with SIGTERM (then killed) when dropped.
struct Engine {
    child: Child,
    base: String,
    _dir: stellar_tests::spawn::TempDir,
}

impl Engine {
    async fn start(bin: &Path, client: &reqwest::Client) -> anyhow::Result<Engine> {
        let dir = stellar_tests::spawn::TempDir::new("bench-engine");
        let addr = stellar_tests::spawn::free_addr();
        let child = Command::new(bin)
            .env("STELLAR_DATA_DIR", dir.path())
            .env("STELLAR_ENGINE_ADDR", &addr)
            .env(
                "STELLAR_ENGINE_METRICS_ADDR",
                stellar_tests::spawn::free_addr(),
            )
            .env("STELLAR_ENGINE_DB_URL", "")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
        let engine = Engine {
            child,
            base: format!("http://{addr}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client
                .get(format!("{}/api/v1/health", engine.base))
                .send()
                .await
            {
                if r.status().is_success() {
                    return Ok(engine);
                }
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "engine did not become healthy within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        stellar_tests::spawn::terminate(&mut self.child, Duration::from_secs(20));
    }
}

/// Latency percentiles in milliseconds.
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
}

fn percentiles(mut samples: Vec<Duration>) -> Percentiles {
    samples.sort_unstable();
    let at = |q: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1e3
    };
    Percentiles {
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
    }
}

async fn store_one(
    client: &reqwest::Client,
    base: &str,
    content: String,
    importance: f64,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let r = client
        .post(format!("{base}/api/v1/store"))
        .json(&serde_json::json!({"content": content, "importance": importance}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "store answered {}", r.status());
    r.bytes().await?;
    Ok(started.elapsed())
}

async fn recall_one(client: &reqwest::Client, base: &str, q: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let r = client
        .get(format!("{base}/api/v1/recall"))
        .query(&[("q", q)])
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "recall answered {}", r.status());
    r.bytes().await?;
    Ok(started.elapsed())
}

struct Row {
    n: usize,
    store_rate: f64,
    store_loaded: Percentiles,
    store_single: Percentiles,
    recall_single: Percentiles,
    recall_rate: f64,
    recall_hits: f64,
}

async fn measure(n: usize, bin: &Path, corpus: Arc<Corpus>) -> anyhow::Result<Row> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(STORE_CLIENTS * 2)
        .build()?;
    let engine = Engine::start(bin, &client).await?;
    let base = engine.base.clone();

    // 1. Fill to N with concurrent clients.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..STORE_CLIENTS {
        let (client, base, next, corpus) =
            (client.clone(), base.clone(), next.clone(), corpus.clone());
        tasks.spawn(async move {
            let mut rng = Rng(0x1234_5678 + worker as u64 * 7919);
            let mut lat = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let text = corpus.text(&mut rng);
                let importance = rng.unit();
                lat.push(store_one(&client, &base, text, importance).await?);
            }
            anyhow::Ok(lat)
        });
    }
    let mut store_lat = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        store_lat.extend(r??);
    }
    let store_rate = n as f64 / started.elapsed().as_secs_f64();

    // 2a. Recall latency, one request at a time.
    let mut rng = Rng(0xABCD);
    let mut recall_lat = Vec::with_capacity(SEQUENTIAL_RECALLS);
    let mut hits = 0usize;
    for _ in 0..SEQUENTIAL_RECALLS {
        let q = corpus.query(&mut rng);
        let started = Instant::now();
        let r = client
            .get(format!("{base}/api/v1/recall"))
            .query(&[("q", q.as_str())])
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "recall answered {}", r.status());
        let items: serde_json::Value = r.json().await?;
        recall_lat.push(started.elapsed());
        hits += items.as_array().map_or(0, Vec::len);
    }

    // 2b. Recall throughput, concurrent clients.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..RECALL_CLIENTS {
        let (client, base, next, corpus) =
            (client.clone(), base.clone(), next.clone(), corpus.clone());
        tasks.spawn(async move {
            let mut rng = Rng(0x9999 + worker as u64 * 104_729);
            while next.fetch_add(1, Ordering::Relaxed) < CONCURRENT_RECALLS {
                recall_one(&client, &base, &corpus.query(&mut rng)).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let recall_rate = CONCURRENT_RECALLS as f64 / started.elapsed().as_secs_f64();

    // 3. Store latency at this size, one request at a time.
    let mut rng = Rng(0x7777);
    let mut single = Vec::with_capacity(SEQUENTIAL_STORES);
    for _ in 0..SEQUENTIAL_STORES {
        single.push(store_one(&client, &base, corpus.text(&mut rng), 0.5).await?);
    }
    drop(engine);

    Ok(Row {
        n,
        store_rate,
        store_loaded: percentiles(store_lat),
        store_single: percentiles(single),
        recall_single: percentiles(recall_lat),
        recall_rate,
        recall_hits: hits as f64 / SEQUENTIAL_RECALLS as f64,
    })
}

/// Run the benchmark at each size in `n_list` against `engine_bin`; returns a Markdown report.
pub async fn run(n_list: &[usize], engine_bin: &Path) -> anyhow::Result<String> {
    anyhow::ensure!(
        engine_bin.exists(),
        "{} does not exist (build it with cargo build --release -p stellar-engine)",
        engine_bin.display()
    );
    let corpus = Arc::new(Corpus::new());
    let mut rows = Vec::new();
    for &n in n_list {
        eprintln!("engine benchmark: {n} memories …");
        let row = measure(n, engine_bin, corpus.clone()).await?;
        eprintln!(
            "  store {:.0}/s (p50 {:.2} ms under load), recall p50 {:.3} ms, {:.0} recalls/s",
            row.store_rate, row.store_loaded.p50, row.recall_single.p50, row.recall_rate
        );
        rows.push(row);
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mut out = String::new();
    out.push_str("### Memory engine (`stellar-bench engine`)\n\n");
    out.push_str(&format!(
        "Release build, SQLite (WAL) in a fresh temp directory, one tenant, {cores} CPU cores shared by engine and client. \
         Fill: {STORE_CLIENTS} concurrent keep-alive clients. Recall latency: {SEQUENTIAL_RECALLS} sequential two-word queries \
         (Zipf-distributed words, default limit 5); recall throughput: {CONCURRENT_RECALLS} queries from {RECALL_CLIENTS} clients. \
         Store latency at size: {SEQUENTIAL_STORES} sequential stores after the fill. Latencies in ms, client-side.\n\n"
    ));
    out.push_str("| memories | store/s (fill) | store p50 / p90 / p99 under load | store p50 / p90 / p99 single | recall p50 / p90 / p99 | recalls/s | hits/recall |\n");
    out.push_str("|---:|---:|---|---|---|---:|---:|\n");
    for r in &rows {
        out.push_str(&format!(
            "| {} | {:.0} | {:.2} / {:.2} / {:.2} | {:.3} / {:.3} / {:.3} | {:.3} / {:.3} / {:.3} | {:.0} | {:.1} |\n",
            r.n,
            r.store_rate,
            r.store_loaded.p50,
            r.store_loaded.p90,
            r.store_loaded.p99,
            r.store_single.p50,
            r.store_single.p90,
            r.store_single.p99,
            r.recall_single.p50,
            r.recall_single.p90,
            r.recall_single.p99,
            r.recall_rate,
            r.recall_hits,
        ));
    }
    Ok(out)
}
