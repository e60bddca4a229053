//! `GET /auth/export`: every memory of every agent of the account as NDJSON, streamed page by
//! page (one engine page in memory at a time; a client that goes away stops the paging).
//!
//! **Paging: the timeline, by creation time.** `GET /api/v1/memories` truncates `content` to 200
//! characters and orders by score, which moves with every recall and every reorbit, so offset
//! paging over it can skip or repeat memories of an account in use. `GET /api/v1/timeline`
//! returns the full content in creation order, which never changes for a memory, and takes a
//! `start` time: we page by that key. Each request asks for the memories created at or after the
//! newest one already written (as an RFC 3339 date-time a few microseconds earlier, so float
//! rounding can only make a page overlap, never leave a gap); memories before it were written
//! by an earlier page, and those at that very instant are recognised by id. The export ends for
//! an agent when a page brings nothing new, so an engine that silently returns fewer items than
//! asked is paged to the end all the same, and a memory stored during the export is included
//! when the paging has not passed its time yet. Pages start at the API's default size (100) and
//! grow to 1,000 while full; an engine that refuses a larger `limit` (422) is asked with 100
//! again, and one that refuses a date-time `start` is asked with a date (the day's memories
//! already written come again and are skipped by time). A page that brings nothing new although
//! full (more memories at one instant, or on one day, than it holds) doubles (up to 10,000).
//!
//! **Lines.** `{"agent", "id", "content", "zone", "importance", "created_at", …}`: `agent` is
//! null for the default space, `id` is the timeline's `memory_id`, `created_at` its `timestamp`
//! (Unix seconds), and every other field the timeline gives (`emotion`, and whatever a richer
//! engine adds) follows as is. `score` and `recall_count` are the engine's running state, shown
//! only by the score-ordered list, and are not exported; the API returns `metadata` from no
//! read endpoint, so it is exported only by an engine whose timeline includes it.
//!
//! **Failure.** The first page is fetched before the answer starts: an engine that does not
//! answer is a 503 JSON error. An engine error after the answer has started cannot change the
//! status any more, so the file ends with one last line `{"error": "…", "agent", "exported"}`
//! (no `id`) and the body then ends normally: a reader that checks every line has an `id` (or
//! any line has `error`) knows the export is incomplete, whichever proxies are in between.

use super::engine::{id_of, Engine, EngineError};
use bytes::Bytes;
use futures::Stream;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;

/// The API's default timeline page; the size asked first, and again after a refusal.
pub const PAGE: usize = 100;
/// Full pages grow up to this.
const MAX_GROWN: usize = 1_000;
/// Pages double up to this when more memories than a page share one instant.
const MAX_TIES: usize = 10_000;
/// How far before the newest written memory the next page starts (float rounding).
const SLACK_MICROS: i64 = 2;

/// One timeline item, checked: its id and time, and the rest of its fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    pub at: f64,
    pub fields: Map<String, Value>,
}

impl Item {
    pub fn parse(mut m: Map<String, Value>) -> Result<Item, String> {
        let id = m
            .remove("memory_id")
            .as_ref()
            .and_then(id_of)
            .ok_or("a timeline item has no memory_id")?;
        let at = m
            .remove("timestamp")
            .as_ref()
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite())
            .ok_or("a timeline item has no numeric timestamp")?;
        Ok(Item { id, at, fields: m })
    }
}

/// Keyset paging over the timeline of one agent (see the module doc).
#[derive(Debug)]
pub struct Pager {
    limit: usize,
    grow: bool,
    /// Ask with a date instead of a date-time (the engine refused a date-time).
    date_only: bool,
    /// The creation time of the newest memory written so far.
    cursor: Option<f64>,
    /// The ids written so far created exactly at `cursor`.
    at_cursor: HashSet<String>,
    done: bool,
}

impl Default for Pager {
    fn default() -> Self {
        Pager {
            limit: PAGE,
            grow: true,
            date_only: false,
            cursor: None,
            at_cursor: HashSet::new(),
            done: false,
        }
    }
}

/// `ts` minus the slack, as the `start` of a timeline request.
pub fn start_param(ts: f64, date_only: bool) -> String {
    let micros = (ts * 1e6).floor() as i64 - SLACK_MICROS;
    let t = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    if date_only {
        t.format("%Y-%m-%d").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

impl Pager {
    /// The `start` of the next request: none for the first.
    pub fn start(&self) -> Option<String> {
        self.cursor.map(|c| start_param(c, self.date_only))
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn done(&self) -> bool {
        self.done
    }

    /// The engine refused the last request (422): ask more modestly. False when there is
    /// nothing left to give up.
    pub fn refused(&mut self) -> bool {
        if self.limit > PAGE {
            self.limit = PAGE;
            self.grow = false;
            true
        } else if !self.date_only && self.cursor.is_some() {
            self.date_only = true;
            true
        } else {
            false
        }
    }

    /// Take one page (in the engine's order: oldest first) and return what was not written yet.
    pub fn take(&mut self, page: Vec<Map<String, Value>>) -> Result<Vec<Item>, String> {
        let full = page.len() >= self.limit;
        let mut fresh = Vec::new();
        for raw in page {
            let item = Item::parse(raw)?;
            match self.cursor {
                // Before the cursor: an earlier page wrote it (a page runs without a gap from
                // its start, at or before the cursor, to its last item).
                Some(c) if item.at < c => continue,
                // At the cursor: written unless its id is new.
                Some(c) if item.at == c => {
                    if !self.at_cursor.insert(item.id.clone()) {
                        continue;
                    }
                }
                _ => {
                    self.cursor = Some(item.at);
                    self.at_cursor.clear();
                    self.at_cursor.insert(item.id.clone());
                }
            }
            fresh.push(item);
        }
        if fresh.is_empty() {
            if !full {
                self.done = true;
            } else if self.limit >= MAX_TIES {
                return Err(format!(
                    "more than {MAX_TIES} memories share one creation time: the timeline cannot be paged"
                ));
            } else {
                self.limit = (self.limit * 2).min(MAX_TIES);
            }
        } else if full && self.grow {
            self.limit = (self.limit * 2).min(MAX_GROWN).max(self.limit);
        }
        Ok(fresh)
    }
}

#[derive(Serialize)]
struct Line<'a> {
    agent: Option<&'a str>,
    id: &'a str,
    content: Value,
    zone: Value,
    importance: Value,
    created_at: f64,
    #[serde(flatten)]
    rest: Map<String, Value>,
}

/// Append the NDJSON line of `item` of `agent` to `out`.
pub fn write_line(out: &mut Vec<u8>, agent: Option<&str>, item: Item) {
    let mut rest = item.fields;
    let mut take = |k: &str| rest.remove(k).unwrap_or(Value::Null);
    let (content, zone, importance) = (take("content"), take("zone"), take("importance"));
    // Names the line sets itself win over an engine's fields of the same name.
    for k in ["agent", "id", "created_at"] {
        rest.remove(k);
    }
    let line = Line {
        agent,
        id: &item.id,
        content,
        zone,
        importance,
        created_at: item.at,
        rest,
    };
    // Serialising a map of JSON values cannot fail.
    let _ = serde_json::to_writer(&mut *out, &line);
    out.push(b'\n');
}

/// The last line of an export cut short by an engine error.
pub fn error_line(agent: Option<&str>, exported: u64) -> Vec<u8> {
    let mut out = serde_json::to_vec(&serde_json::json!({
        "error": "The export is incomplete: the memory engine failed during it. Try again later.",
        "agent": agent,
        "exported": exported,
    }))
    .unwrap_or_default();
    out.push(b'\n');
    out
}

/// One export in progress.
pub struct Export {
    engine: Engine,
    agents: VecDeque<Option<String>>,
    current: Option<(Option<String>, Pager)>,
    /// A page fetched but not yet written (the first one).
    ready: Option<Vec<Map<String, Value>>>,
    exported: u64,
    finished: bool,
}

/// One timeline page for `pager`, asking more modestly when the engine refuses (422).
async fn fetch(
    engine: &Engine,
    agent: Option<&str>,
    pager: &mut Pager,
) -> Result<Vec<Map<String, Value>>, EngineError> {
    loop {
        let start = pager.start();
        match engine
            .timeline(agent, start.as_deref(), pager.limit())
            .await
        {
            Err(EngineError::Status { status: 422, .. }) if pager.refused() => continue,
            r => return r,
        }
    }
}

impl Export {
    /// Start exporting `agents` (in order): the first page of the first agent is fetched now, so
    /// an engine that does not answer fails here, before any byte of the answer.
    pub async fn start(engine: Engine, agents: Vec<Option<String>>) -> Result<Export, EngineError> {
        let mut agents: VecDeque<Option<String>> = agents.into();
        let first = agents.pop_front().unwrap_or(None);
        let mut pager = Pager::default();
        let page = fetch(&engine, first.as_deref(), &mut pager).await?;
        Ok(Export {
            engine,
            agents,
            current: Some((first, pager)),
            ready: Some(page),
            exported: 0,
            finished: false,
        })
    }

    /// The lines of the next page that has any, `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.finished {
                return None;
            }
            let Some((agent, pager)) = self.current.as_mut() else {
                match self.agents.pop_front() {
                    Some(a) => self.current = Some((a, Pager::default())),
                    None => self.finished = true,
                }
                continue;
            };
            let page = match self.ready.take() {
                Some(p) => Ok(p),
                None => fetch(&self.engine, agent.as_deref(), pager).await,
            };
            let fresh = page.map_err(|e| e.to_string()).and_then(|p| pager.take(p));
            let items = match fresh {
                Ok(items) => items,
                Err(e) => {
                    tracing::warn!(error = %e, agent = ?agent, exported = self.exported, "export cut short by the memory engine");
                    self.finished = true;
                    return Some(error_line(agent.as_deref(), self.exported).into());
                }
            };
            let mut out = Vec::new();
            for item in items {
                write_line(&mut out, agent.as_deref(), item);
                self.exported += 1;
            }
            if pager.done() {
                self.current = None;
            }
            if !out.is_empty() {
                return Some(out.into());
            }
        }
    }

    /// The export as a body stream: one chunk per page.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
        futures::stream::unfold(self, |mut ex| async move {
            ex.next_chunk().await.map(|b| (Ok(b), ex))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn item(id: &str, at: f64) -> Map<String, Value> {
        let Value::Object(m) = json!({"memory_id": id, "timestamp": at, "content": format!("c-{id}"), "zone": 1, "importance": 0.5, "emotion": null})
        else {
            unreachable!()
        };
        m
    }

    /// A fake timeline over `all` (sorted by time, then id) that answers as the engine does,
    /// optionally capping every page at `cap` items.
    fn serve(all: &[(String, f64)], pager: &Pager, cap: usize) -> Vec<Map<String, Value>> {
        let start = pager.start().map(|s| {
            if s.len() == 10 {
                chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d")
                    .unwrap()
                    .and_hms_opt(0, 0, 0)
                    .unwrap()
                    .and_utc()
                    .timestamp_micros() as f64
                    / 1e6
            } else {
                chrono::DateTime::parse_from_rfc3339(&s)
                    .unwrap()
                    .timestamp_micros() as f64
                    / 1e6
            }
        });
        all.iter()
            .filter(|(_, at)| start.is_none_or(|s| *at >= s))
            .take(pager.limit().min(cap))
            .map(|(id, at)| item(id, *at))
            .collect()
    }

    /// Page through `all` to the end; every id comes back exactly once, in order.
    fn page_all(all: &[(String, f64)], cap: usize) -> (Vec<String>, usize) {
        let mut p = Pager::default();
        let mut out = Vec::new();
        let mut requests = 0;
        while !p.done() {
            requests += 1;
            assert!(requests < 10_000, "paging does not end");
            let page = serve(all, &p, cap);
            out.extend(p.take(page).unwrap().into_iter().map(|i| i.id));
        }
        (out, requests)
    }

    fn timeline(times: &[f64]) -> Vec<(String, f64)> {
        let mut v: Vec<(String, f64)> = times
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("{i:05}"), *t))
            .collect();
        v.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        v
    }

    #[test]
    fn pages_every_memory_exactly_once() {
        for n in [0usize, 1, 99, 100, 101, 250, 2_345] {
            let all = timeline(
                &(0..n)
                    .map(|i| 1_717_000_000.0 + i as f64 * 0.001_234_5)
                    .collect::<Vec<_>>(),
            );
            let (got, requests) = page_all(&all, usize::MAX);
            let want: Vec<String> = all.iter().map(|(id, _)| id.clone()).collect();
            assert_eq!(got, want, "n = {n}");
            // Pages grow: 2,345 memories take 100 + 200 + 400 + 800 + 1,000 + the empty end.
            assert!(requests <= n / 100 + 2, "n = {n}: {requests} requests");
        }
    }

    #[test]
    fn ties_at_a_page_boundary_and_beyond_a_page() {
        // 150 memories at one instant, then 30 more: the tie group is wider than the first page.
        let mut times = vec![1_717_000_000.5; 150];
        times.extend((0..30).map(|i| 1_717_000_001.0 + f64::from(i)));
        let all = timeline(&times);
        let (got, _) = page_all(&all, usize::MAX);
        assert_eq!(got.len(), 180);
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 180);
    }

    #[test]
    fn an_engine_that_caps_its_pages_is_paged_to_the_end() {
        let all = timeline(&(0..500).map(|i| 1e9 + f64::from(i)).collect::<Vec<_>>());
        let (got, _) = page_all(&all, 37);
        assert_eq!(got.len(), 500);
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 500);
    }

    #[test]
    fn refusals_fall_back_to_the_default_page_then_to_dates() {
        let all = timeline(
            &(0..450)
                .map(|i| 1e9 + f64::from(i) * 60.0)
                .collect::<Vec<_>>(),
        );
        let mut p = Pager::default();
        let mut got = Vec::new();
        got.extend(
            p.take(serve(&all, &p, usize::MAX))
                .unwrap()
                .into_iter()
                .map(|i| i.id),
        );
        assert_eq!(p.limit(), 200, "a full page grows");
        assert!(p.refused(), "422 on limit=200");
        assert_eq!(p.limit(), PAGE);
        assert!(p.start().unwrap().contains('T'));
        assert!(p.refused(), "422 on a date-time start");
        assert_eq!(p.start().unwrap().len(), 10, "a date: {:?}", p.start());
        assert!(!p.refused(), "nothing left to give up");
        while !p.done() {
            got.extend(
                p.take(serve(&all, &p, usize::MAX))
                    .unwrap()
                    .into_iter()
                    .map(|i| i.id),
            );
        }
        assert_eq!(got.len(), 450);
        assert_eq!(got.iter().collect::<HashSet<_>>().len(), 450);
    }

    #[test]
    fn the_start_is_just_before_the_cursor_and_never_after_it() {
        for ts in [
            1_717_000_000.123_456_7,
            1_717_000_000.0,
            0.000_001,
            1e9 + 0.999_999_9,
        ] {
            let s = start_param(ts, false);
            let back = chrono::DateTime::parse_from_rfc3339(&s)
                .unwrap()
                .timestamp_micros() as f64
                / 1e6;
            assert!(back < ts && ts - back < 1e-5, "{ts} → {s} → {back}");
            assert!(s.ends_with("+00:00"), "{s}");
        }
        assert_eq!(
            start_param(1_717_000_000.5, false),
            "2024-05-29T16:26:40.499998+00:00"
        );
        assert_eq!(start_param(1_717_000_000.5, true), "2024-05-29");
    }

    #[test]
    fn malformed_items_are_errors() {
        let mut p = Pager::default();
        let Value::Object(no_id) = json!({"timestamp": 1.0}) else {
            unreachable!()
        };
        assert!(p.take(vec![no_id]).is_err());
        let Value::Object(no_ts) = json!({"memory_id": "a", "timestamp": "yesterday"}) else {
            unreachable!()
        };
        assert!(p.take(vec![no_ts]).is_err());
    }

    #[test]
    fn lines_carry_the_agent_the_full_item_and_the_engine_extras() {
        let long = "x".repeat(500);
        let Value::Object(m) = json!({
            "memory_id": "6f1c", "timestamp": 1_717_000_000.25, "content": long, "zone": 2,
            "importance": 0.75, "emotion": {"joy": 0.5}, "metadata": {"k": 1}, "id": "spoof"
        }) else {
            unreachable!()
        };
        let mut out = Vec::new();
        write_line(&mut out, Some("bot-1"), Item::parse(m.clone()).unwrap());
        write_line(&mut out, None, Item::parse(m).unwrap());
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(text.ends_with('\n'));
        assert!(
            lines[0].starts_with(r#"{"agent":"bot-1","id":"6f1c","content":"xxx"#),
            "{}",
            lines[0]
        );
        let v: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["content"].as_str().unwrap().len(), 500);
        assert_eq!(v["created_at"], 1_717_000_000.25);
        assert_eq!(v["zone"], 2);
        assert_eq!(v["importance"], 0.75);
        assert_eq!(v["emotion"]["joy"], 0.5);
        assert_eq!(v["metadata"]["k"], 1);
        assert!(v.get("memory_id").is_none() && v.get("timestamp").is_none());
        let v: Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(v["agent"], Value::Null);
        assert_eq!(v["id"], "6f1c");
        let e: Value = serde_json::from_slice(&error_line(Some("a"), 7)).unwrap();
        assert!(e["error"].as_str().unwrap().contains("incomplete"));
        assert_eq!(
            (e["agent"].as_str(), e["exported"].as_u64()),
            (Some("a"), Some(7))
        );
        assert!(e.get("id").is_none());
    }
}
