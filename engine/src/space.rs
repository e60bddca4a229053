//! One tenant's memories in RAM: the rows, their zones and their full-text index.
//!
//! A `Space` is the authoritative working copy; storage holds the durable copy and is written
//! through (see `engine.rs`). Zones are ordered sets keyed by (score, slot), so "push the
//! lowest-scored outward" is `pop_first` and listing by score is a merge of five sorted sets.
//! Nothing here blocks or awaits: the caller holds the space's lock only for these calls.

use crate::index::{DocId, Index, Matches};
use crate::model::{self, Emotion, ScoreInputs, Tags, Weights, CAPACITIES, CLOUD, ZONES};
use std::cmp::Ordering;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use uuid::Uuid;

/// A memory as the engine works with it.
#[derive(Debug, Clone)]
pub struct Memory {
    pub id: Uuid,
    pub content: String,
    pub importance: f64,
    pub emotion: Option<Emotion>,
    pub created_at: f64,
    pub last_recalled_at: f64,
    pub recall_count: i64,
    /// Relevance to the last query that recalled it, in [0, 1] (the score's context term).
    pub context: f64,
    /// The score as of the last time it was computed (store, recall or reorbit).
    pub score: f64,
    pub zone: u8,
    /// `metadata.tags`, if the metadata has that key (introspection's coverage reads it).
    pub tags: Option<Tags>,
}

impl Memory {
    pub fn new(
        id: Uuid,
        content: String,
        importance: f64,
        emotion: Option<Emotion>,
        created_at: f64,
    ) -> Memory {
        Memory {
            id,
            content,
            importance,
            emotion,
            created_at,
            last_recalled_at: created_at,
            recall_count: 0,
            context: 0.0,
            score: 0.0,
            zone: 0,
            tags: None,
        }
    }

    fn inputs(&self) -> ScoreInputs {
        ScoreInputs {
            recall_count: self.recall_count,
            last_recalled_at: self.last_recalled_at,
            importance: self.importance,
            context: self.context,
            emotion: self.emotion.map_or(0.0, |e| e.intensity()),
        }
    }
}

/// Where a memory now sits; what storage needs to persist a move.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    pub id: Uuid,
    pub zone: u8,
    pub score: f64,
}

/// Zone-set key: ascending by score, ties broken by slot so keys are unique.
#[derive(Debug, Clone, Copy)]
struct ZoneKey {
    score: f64,
    slot: DocId,
}

impl PartialEq for ZoneKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for ZoneKey {}
impl PartialOrd for ZoneKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ZoneKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(self.slot.cmp(&other.slot))
    }
}

/// What a reorbit changed.
#[derive(Debug, Default)]
pub struct ReorbitOutcome {
    /// Memories whose zone changed (excluding the forgotten), to persist.
    pub placements: Vec<Placement>,
    /// How many memories newly decayed into the cloud.
    pub decayed: usize,
    /// Memories removed by auto-forget.
    pub forgotten: Vec<Uuid>,
}

/// A recall hit before it is applied: the slot, the id it had when ranked, and its relevance.
#[derive(Debug, Clone, Copy)]
pub struct Hit {
    pub slot: DocId,
    pub id: Uuid,
    /// BM25 normalised by the best hit of this query, in (0, 1].
    pub relevance: f64,
}

/// A ranked candidate: higher rank first, ties to the lower slot (deterministic order).
#[derive(Debug, Clone, Copy)]
struct Ranked {
    rank: f64,
    slot: DocId,
    relevance: f64,
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank
            .total_cmp(&other.rank)
            .then(other.slot.cmp(&self.slot))
    }
}

/// How much of a recall's ranking comes from text relevance versus the memory's own score.
const RANK_RELEVANCE: f64 = 0.8;
const RANK_SCORE: f64 = 0.2;

/// Cloneable so a benchmark can run on a scratch copy of a tenant's space.
#[derive(Debug, Default, Clone)]
pub struct Space {
    slots: Vec<Option<Memory>>,
    free: Vec<DocId>,
    by_id: HashMap<Uuid, DocId>,
    zones: [BTreeSet<ZoneKey>; ZONES],
    index: Index,
    /// Each slot's current score, kept beside the memories so ranking reads a dense array.
    slot_scores: Vec<f64>,
    /// The tenant's score weights (the original's defaults until `optimize` tunes them).
    weights: Weights,
}

impl Space {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn weights(&self) -> Weights {
        self.weights
    }

    /// Score with these weights from now on; existing scores change at the next reorbit, as
    /// in the original (whose tuned weights apply to the next calculation).
    pub fn set_weights(&mut self, weights: Weights) {
        self.weights = weights;
    }

    pub fn zone_counts(&self) -> [usize; ZONES] {
        std::array::from_fn(|z| self.zones[z].len())
    }

    pub fn get(&self, id: &Uuid) -> Option<&Memory> {
        self.by_id
            .get(id)
            .and_then(|&s| self.slots[s as usize].as_ref())
    }

    fn mem(&self, slot: DocId) -> &Memory {
        self.slots[slot as usize].as_ref().expect("live slot")
    }

    fn mem_mut(&mut self, slot: DocId) -> &mut Memory {
        self.slots[slot as usize].as_mut().expect("live slot")
    }

    /// Add a new memory scored at `now` and place it in its zone, pushing others outward if the
    /// zone is full. Returns the other memories that moved.
    pub fn insert(&mut self, memory: Memory, now: f64) -> Vec<Placement> {
        let slot = self.free.pop().unwrap_or(self.slots.len() as DocId);
        self.insert_at(slot, memory, now, None)
    }

    /// Add a memory loaded from storage, keeping its stored zone and score (a reorbit right
    /// after loading makes them current).
    pub fn load(&mut self, memory: Memory) {
        let slot = self.free.pop().unwrap_or(self.slots.len() as DocId);
        let zone = memory.zone.min(CLOUD);
        let score = memory.score;
        self.insert_at(slot, memory, score, Some(zone));
    }

    fn insert_at(
        &mut self,
        slot: DocId,
        mut memory: Memory,
        now: f64,
        fixed_zone: Option<u8>,
    ) -> Vec<Placement> {
        self.index.add(slot, &memory.content);
        let zone = match fixed_zone {
            Some(z) => z,
            None => {
                memory.score = model::score(&memory.inputs(), now, &self.weights);
                model::natural_zone(memory.score)
            }
        };
        self.by_id.insert(memory.id, slot);
        if slot as usize == self.slots.len() {
            self.slots.push(Some(memory));
        } else {
            self.slots[slot as usize] = Some(memory);
        }
        match fixed_zone {
            Some(z) => {
                self.mem_mut(slot).zone = z;
                let score = self.mem(slot).score;
                self.set_slot_score(slot, score);
                self.zones[z as usize].insert(ZoneKey { score, slot });
                Vec::new()
            }
            None => self.place(slot, zone),
        }
    }

    /// Put `slot` (already scored, in no zone set) into `zone`, cascading overflow outward.
    fn place(&mut self, slot: DocId, zone: u8) -> Vec<Placement> {
        let score = self.mem(slot).score;
        self.set_slot_score(slot, score);
        self.mem_mut(slot).zone = zone;
        self.zones[zone as usize].insert(ZoneKey { score, slot });
        let mut moved: Vec<DocId> = Vec::new();
        let mut z = zone as usize;
        while let Some(cap) = CAPACITIES[z] {
            if self.zones[z].len() <= cap {
                break;
            }
            let lowest = self.zones[z]
                .pop_first()
                .expect("over-full zone is not empty");
            z += 1;
            self.zones[z].insert(lowest);
            self.mem_mut(lowest.slot).zone = z as u8;
            if lowest.slot != slot && !moved.contains(&lowest.slot) {
                moved.push(lowest.slot);
            }
        }
        moved
            .into_iter()
            .map(|s| {
                let m = self.mem(s);
                Placement {
                    id: m.id,
                    zone: m.zone,
                    score: m.score,
                }
            })
            .collect()
    }

    fn set_slot_score(&mut self, slot: DocId, score: f64) {
        if self.slot_scores.len() <= slot as usize {
            self.slot_scores.resize(slot as usize + 1, 0.0);
        }
        self.slot_scores[slot as usize] = score;
    }

    /// Forget a memory. Returns it if it existed.
    pub fn remove(&mut self, id: &Uuid) -> Option<Memory> {
        let slot = self.by_id.remove(id)?;
        let memory = self.slots[slot as usize]
            .take()
            .expect("indexed slot is live");
        self.zones[memory.zone as usize].remove(&ZoneKey {
            score: memory.score,
            slot,
        });
        self.index.remove(slot);
        self.free.push(slot);
        Some(memory)
    }

    /// Rank memories for `query`: BM25 relevance blended with each memory's score, best first.
    /// `emotion` keeps only memories whose dominant emotion has that name.
    pub fn search(&self, query: &str, emotion: Option<&str>, limit: usize) -> Vec<Hit> {
        if limit == 0 {
            return Vec::new();
        }
        // Try the pruned search first; if a left-out memory could have made the top `limit`,
        // rank again with every match (it takes few matches of the query's rarer words).
        match self.rank(&self.index.search(query, true), emotion, limit) {
            Some(hits) => hits,
            None => self
                .rank(&self.index.search(query, false), emotion, limit)
                .expect("a full search is exact"),
        }
    }

    /// Top `limit` of `matches`, or `None` if memories left out of them could rank higher.
    fn rank(&self, matches: &Matches, emotion: Option<&str>, limit: usize) -> Option<Vec<Hit>> {
        let keep = |slot: DocId| {
            emotion.is_none_or(|e| {
                self.mem(slot)
                    .emotion
                    .is_some_and(|v| v.dominant().eq_ignore_ascii_case(e))
            })
        };
        let mut best = 0f32;
        matches.for_each(|d, s| {
            if s > best && keep(d) {
                best = s;
            }
        });
        if best <= 0.0 {
            return (matches.omitted_bound == 0.0).then(Vec::new);
        }
        // Top-k in one pass with a min-heap of the best `limit` so far; scores come from the
        // compact per-slot array, so ranking 100k matches never touches the memories themselves.
        let mut top: BinaryHeap<Reverse<Ranked>> = BinaryHeap::with_capacity(limit + 1);
        matches.for_each(|slot, bm25| {
            if !keep(slot) {
                return;
            }
            let relevance = f64::from(bm25 / best);
            let rank = RANK_RELEVANCE * relevance
                + RANK_SCORE * self.slot_scores[slot as usize].clamp(0.0, 1.0);
            let r = Ranked {
                rank,
                slot,
                relevance,
            };
            if top.len() < limit {
                top.push(Reverse(r));
            } else if top.peek().is_some_and(|w| r > w.0) {
                top.pop();
                top.push(Reverse(r));
            }
        });
        if matches.omitted_bound > 0.0 {
            // A left-out memory ranks at most this. The highest score in the tenant is the top
            // of one of the zone sets.
            let max_score = self
                .zones
                .iter()
                .filter_map(|z| z.last())
                .map(|k| k.score)
                .fold(0.0, f64::max)
                .clamp(0.0, 1.0);
            let bound =
                RANK_RELEVANCE * f64::from(matches.omitted_bound / best) + RANK_SCORE * max_score;
            let threshold = top.peek().map(|w| w.0.rank);
            if top.len() < limit || threshold.is_none_or(|t| bound >= t) {
                return None;
            }
        }
        let mut ranked: Vec<Ranked> = top.into_iter().map(|r| r.0).collect();
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        Some(
            ranked
                .into_iter()
                .map(|r| Hit {
                    slot: r.slot,
                    id: self.mem(r.slot).id,
                    relevance: r.relevance,
                })
                .collect(),
        )
    }

    /// Apply a recall to a hit found by `search`: count it, refresh it, rescore and re-place it.
    /// Returns `None` if the memory was forgotten (or its slot reused) since it was ranked;
    /// otherwise the memory's own new placement followed by any others that moved.
    pub fn touch(&mut self, hit: &Hit, now: f64) -> Option<Vec<Placement>> {
        let slot = hit.slot;
        match self.slots.get(slot as usize) {
            Some(Some(m)) if m.id == hit.id => {}
            _ => return None,
        }
        let old = ZoneKey {
            score: self.mem(slot).score,
            slot,
        };
        let zone = self.mem(slot).zone;
        self.zones[zone as usize].remove(&old);
        let weights = self.weights;
        let m = self.mem_mut(slot);
        m.recall_count += 1;
        m.last_recalled_at = now;
        m.context = hit.relevance;
        m.score = model::score(&m.inputs(), now, &weights);
        let target = model::natural_zone(m.score);
        let mut changes = self.place(slot, target);
        let m = self.mem(slot);
        changes.insert(
            0,
            Placement {
                id: m.id,
                zone: m.zone,
                score: m.score,
            },
        );
        Some(changes)
    }

    pub fn memory_at(&self, slot: DocId) -> &Memory {
        self.mem(slot)
    }

    /// The memory a hit found, if it is still there (not forgotten, slot not reused).
    pub fn peek(&self, hit: &Hit) -> Option<&Memory> {
        match self.slots.get(hit.slot as usize) {
            Some(Some(m)) if m.id == hit.id => Some(m),
            _ => None,
        }
    }

    /// The first `n` memories zone by zone (core first), oldest first within a zone: the order
    /// the original lists all memories in (its zones are tables read in insertion order).
    pub fn first_by_zone(&self, n: usize) -> Vec<&Memory> {
        let mut out: Vec<&Memory> = Vec::with_capacity(n.min(self.len()));
        for set in &self.zones {
            if out.len() >= n {
                break;
            }
            let mut zone: Vec<&Memory> = set.iter().map(|k| self.mem(k.slot)).collect();
            let key = |a: &&Memory, b: &&Memory| {
                a.created_at.total_cmp(&b.created_at).then(a.id.cmp(&b.id))
            };
            let want = n - out.len();
            if zone.len() > want {
                zone.select_nth_unstable_by(want, key);
                zone.truncate(want);
            }
            zone.sort_by(key);
            out.extend(zone);
        }
        out
    }

    /// Memories sorted by score (highest first), optionally in one zone, paginated; with the
    /// total number that matched.
    pub fn list(&self, zone: Option<u8>, offset: usize, limit: usize) -> (usize, Vec<&Memory>) {
        match zone {
            Some(z) if (z as usize) < ZONES => {
                let set = &self.zones[z as usize];
                (
                    set.len(),
                    set.iter()
                        .rev()
                        .skip(offset)
                        .take(limit)
                        .map(|k| self.mem(k.slot))
                        .collect(),
                )
            }
            Some(_) => (0, Vec::new()),
            None => {
                // Each zone is sorted; a five-way merge yields the global order without sorting
                // the whole tenant for a page.
                let mut iters: Vec<_> = self
                    .zones
                    .iter()
                    .map(|s| s.iter().rev().peekable())
                    .collect();
                let mut page = Vec::with_capacity(limit.min(self.len()));
                let mut skipped = 0;
                while page.len() < limit {
                    let mut best: Option<(usize, ZoneKey)> = None;
                    for (i, it) in iters.iter_mut().enumerate() {
                        if let Some(&&k) = it.peek() {
                            if best.is_none_or(|(_, b)| k > b) {
                                best = Some((i, k));
                            }
                        }
                    }
                    let Some((i, k)) = best else { break };
                    iters[i].next();
                    if skipped < offset {
                        skipped += 1;
                    } else {
                        page.push(self.mem(k.slot));
                    }
                }
                (self.len(), page)
            }
        }
    }

    /// Memories created within [start, end] (Unix seconds, either open), oldest first.
    pub fn timeline(&self, start: Option<f64>, end: Option<f64>, limit: usize) -> Vec<&Memory> {
        let mut items: Vec<&Memory> = self
            .slots
            .iter()
            .flatten()
            .filter(|m| {
                start.is_none_or(|s| m.created_at >= s) && end.is_none_or(|e| m.created_at <= e)
            })
            .collect();
        items.sort_by(|a, b| a.created_at.total_cmp(&b.created_at).then(a.id.cmp(&b.id)));
        items.truncate(limit);
        items
    }

    /// Rescore every memory at `now` and lay the zones out again from scratch; then decay
    /// (zone ≥ 2 and not recalled for `decay_days` → cloud) and forget (decayed and not recalled
    /// for `forget_days`).
    pub fn reorbit(&mut self, now: f64, decay_days: f64, forget_days: f64) -> ReorbitOutcome {
        let mut order: Vec<(f64, DocId)> = Vec::with_capacity(self.len());
        let weights = self.weights;
        for (slot, m) in self.slots.iter_mut().enumerate() {
            if let Some(m) = m {
                m.score = model::score(&m.inputs(), now, &weights);
                order.push((m.score, slot as DocId));
            }
        }
        order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));

        // Pass 1: where capacities put each memory. Decay is judged on that zone, as the
        // original judges it on the zone a memory is in.
        let first = layout(&order, |_| false);
        let decays = |slot: DocId, zone: u8| {
            zone >= 2 && model::is_stale(self.mem(slot).last_recalled_at, now, decay_days)
        };
        let decayed: std::collections::HashSet<DocId> = order
            .iter()
            .zip(&first)
            .filter(|((_, s), z)| decays(*s, **z))
            .map(|((_, s), _)| *s)
            .collect();
        // Pass 2: the same layout with the decayed memories set aside in the cloud, so the room
        // they leave goes to the next in line.
        let second = layout(&order, |s| decayed.contains(&s));

        let mut out = ReorbitOutcome::default();
        for set in &mut self.zones {
            set.clear();
        }
        let mut forget = Vec::new();
        for (&(score, slot), &zone) in order.iter().zip(&second) {
            let m = self.slots[slot as usize].as_mut().expect("live slot");
            if decayed.contains(&slot) {
                if model::is_stale(m.last_recalled_at, now, forget_days) {
                    forget.push(m.id);
                }
                if m.zone != CLOUD {
                    out.decayed += 1;
                }
            }
            if m.zone != zone {
                m.zone = zone;
                out.placements.push(Placement {
                    id: m.id,
                    zone,
                    score,
                });
            }
            self.zones[zone as usize].insert(ZoneKey { score, slot });
            self.slot_scores[slot as usize] = score;
        }
        for id in forget {
            self.remove(&id);
            out.placements.retain(|p| p.id != id);
            out.forgotten.push(id);
        }
        out
    }
}

/// Greedy zone layout of memories sorted by score (highest first): each goes to its natural
/// zone or the first zone outward with room; `to_cloud` memories go straight to the cloud.
fn layout(order: &[(f64, DocId)], to_cloud: impl Fn(DocId) -> bool) -> Vec<u8> {
    let mut counts = [0usize; ZONES];
    order
        .iter()
        .map(|&(score, slot)| {
            let mut z = if to_cloud(slot) {
                CLOUD as usize
            } else {
                model::natural_zone(score) as usize
            };
            while CAPACITIES[z].is_some_and(|cap| counts[z] >= cap) {
                z += 1;
            }
            counts[z] += 1;
            z as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SECS_PER_DAY;

    fn mem(content: &str, importance: f64, at: f64) -> Memory {
        Memory::new(
            Uuid::new_v4(),
            content.to_string(),
            importance,
            Emotion::analyze(content),
            at,
        )
    }

    fn check_invariants(s: &Space) {
        let counts = s.zone_counts();
        assert_eq!(counts.iter().sum::<usize>(), s.len());
        for (z, cap) in CAPACITIES.iter().enumerate() {
            if let Some(cap) = cap {
                assert!(counts[z] <= *cap, "zone {z} holds {} > {cap}", counts[z]);
            }
        }
        for m in s.slots.iter().flatten() {
            let slot = s.by_id[&m.id];
            assert!(
                s.zones[m.zone as usize].contains(&ZoneKey {
                    score: m.score,
                    slot
                }),
                "memory not in its zone set"
            );
            assert_eq!(
                s.slot_scores[slot as usize], m.score,
                "ranking score out of date"
            );
        }
    }

    #[test]
    fn full_zone_pushes_its_lowest_scored_memory_outward() {
        let mut s = Space::default();
        // Importance 1.0 and fresh: score 0.55, zone 1 (capacity 100).
        for i in 0..100 {
            assert!(s
                .insert(mem(&format!("important {i}"), 1.0, 0.0), 0.0)
                .is_empty());
        }
        assert_eq!(s.zone_counts()[1], 100);
        // A slightly lower-scored one stored later (at t=10, freshness a hair lower) is the
        // lowest in the full zone: it is the one that goes outward, not an older memory.
        let late = mem("late", 1.0, 0.0);
        let late_id = late.id;
        let moved = s.insert(late, 10.0);
        assert!(moved.is_empty());
        assert_eq!(s.get(&late_id).unwrap().zone, 2);
        // A higher-scored newcomer displaces the lowest incumbent, which is reported as moved.
        let mut top = mem("top", 1.0, 0.0);
        top.recall_count = 5;
        let moved = s.insert(top, 0.0);
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].zone, 2);
        assert_eq!(s.zone_counts()[1], 100);
        assert_eq!(s.zone_counts()[2], 2);
        check_invariants(&s);
    }

    #[test]
    fn overflow_cascades_through_several_zones() {
        let mut s = Space::default();
        // Fill core (20) with high scorers by hand-made recall counts.
        for i in 0..21 {
            let mut m = mem(&format!("core {i}"), 1.0, 0.0);
            m.recall_count = 1000;
            m.context = 1.0;
            s.insert(m, 0.0);
        }
        assert_eq!(s.zone_counts()[0], 20);
        assert_eq!(s.zone_counts()[1], 1);
        check_invariants(&s);
    }

    #[test]
    fn recall_touch_moves_a_memory_inward_and_counts() {
        let mut s = Space::default();
        let m = mem("dark mode preference", 1.0, 0.0);
        let id = m.id;
        s.insert(m, 0.0);
        let hits = s.search("dark mode", None, 5);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].relevance, 1.0);
        let changes = s.touch(&hits[0], 100.0).unwrap();
        assert_eq!(changes[0].id, id);
        let m = s.get(&id).unwrap();
        assert_eq!(m.recall_count, 1);
        assert_eq!(m.last_recalled_at, 100.0);
        assert!(m.score > 0.7, "{}", m.score);
        // A hit whose memory was forgotten meanwhile is skipped.
        s.remove(&id);
        assert!(s.touch(&hits[0], 200.0).is_none());
        check_invariants(&s);
    }

    #[test]
    fn search_blends_relevance_with_score_and_filters_emotion() {
        let mut s = Space::default();
        let a = mem("project deadline friday", 0.0, 0.0);
        let b = mem("project deadline friday", 1.0, 0.0);
        let c = mem("happy news about the project", 0.5, 0.0);
        let (a_id, b_id, c_id) = (a.id, b.id, c.id);
        for m in [a, b, c] {
            s.insert(m, 0.0);
        }
        // Same text relevance: the more important memory ranks first.
        let hits = s.search("deadline", None, 5);
        assert_eq!(
            hits.iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![b_id, a_id]
        );
        assert_eq!(s.search("project", None, 1).len(), 1);
        let joy = s.search("project", Some("joy"), 5);
        assert_eq!(joy.iter().map(|h| h.id).collect::<Vec<_>>(), vec![c_id]);
        assert!(s.search("project", Some("anger"), 5).is_empty());
    }

    #[test]
    fn list_is_sorted_by_score_across_zones() {
        let mut s = Space::default();
        for i in 0..150 {
            s.insert(
                mem(&format!("m {i}"), (i % 10) as f64 / 10.0, 0.0),
                i as f64,
            );
        }
        let (total, page) = s.list(None, 0, 1000);
        assert_eq!(total, 150);
        assert_eq!(page.len(), 150);
        assert!(page.windows(2).all(|w| w[0].score >= w[1].score));
        let (_, second) = s.list(None, 10, 5);
        assert_eq!(
            second.iter().map(|m| m.id).collect::<Vec<_>>(),
            page[10..15].iter().map(|m| m.id).collect::<Vec<_>>()
        );
        let (z2, items) = s.list(Some(2), 0, 1000);
        assert_eq!(z2, s.zone_counts()[2]);
        assert!(items.iter().all(|m| m.zone == 2));
    }

    #[test]
    fn reorbit_moves_stale_memories_outward_then_decays_and_forgets() {
        let mut s = Space::default();
        let keep = mem("recalled often", 1.0, 0.0);
        let old = mem("never seen", 0.5, 0.0);
        let (keep_id, old_id) = (keep.id, old.id);
        s.insert(keep, 0.0);
        s.insert(old, 0.0);
        assert_eq!(s.get(&old_id).unwrap().zone, 2);

        // A few hours later freshness is gone: the unrecalled memory drifts to the belt.
        let out = s.reorbit(20_000.0, 30.0, 90.0);
        assert_eq!(s.get(&old_id).unwrap().zone, 3);
        assert!(out.placements.iter().any(|p| p.id == old_id && p.zone == 3));
        assert_eq!(out.decayed, 0);

        // Keep one memory alive by recalling it just before each check.
        let touch = |s: &mut Space, at: f64| {
            let h = s.search("recalled", None, 1);
            s.touch(&h[0], at).unwrap();
        };
        touch(&mut s, 31.0 * SECS_PER_DAY);
        let out = s.reorbit(31.0 * SECS_PER_DAY, 30.0, 90.0);
        assert_eq!(out.decayed, 1);
        assert_eq!(s.get(&old_id).unwrap().zone, CLOUD);
        assert_ne!(s.get(&keep_id).unwrap().zone, CLOUD);
        // Decay is reported once, not on every reorbit while it stays in the cloud.
        assert_eq!(s.reorbit(32.0 * SECS_PER_DAY, 30.0, 90.0).decayed, 0);

        touch(&mut s, 91.0 * SECS_PER_DAY);
        let out = s.reorbit(91.0 * SECS_PER_DAY, 30.0, 90.0);
        assert_eq!(out.forgotten, vec![old_id]);
        assert!(s.get(&old_id).is_none());
        assert!(s.get(&keep_id).is_some());
        assert!(s.search("never", None, 5).is_empty());
        check_invariants(&s);
    }

    #[test]
    fn decay_spares_inner_zones() {
        let mut s = Space::default();
        let mut m = mem("well known", 1.0, 0.0);
        m.recall_count = 1000;
        let id = m.id;
        s.insert(m, 0.0);
        // recall 0.3 + importance 0.25 = 0.55 even with no freshness: zone 1, never decays.
        let out = s.reorbit(365.0 * SECS_PER_DAY, 30.0, 90.0);
        assert_eq!(out.decayed, 0);
        assert!(out.forgotten.is_empty());
        assert_eq!(s.get(&id).unwrap().zone, 1);
    }

    #[test]
    fn reorbit_respects_capacities_and_frees_room_left_by_decay() {
        let mut s = Space::default();
        for i in 0..1200 {
            s.insert(mem(&format!("m {i}"), 0.9, 0.0), 0.0);
        }
        s.reorbit(0.0, 30.0, 90.0);
        let c = s.zone_counts();
        // 0.3 + 0.225 = 0.525 → zone 1 (100), then overflow to zone 2 (1000) and the belt.
        assert_eq!(c, [0, 100, 1000, 100, 0]);
        check_invariants(&s);
        // Recall one memory now and then all others are stale after 40 days.
        let now = 40.0 * SECS_PER_DAY;
        let h = s.search("m 7", None, 1);
        s.touch(&h[0], now).unwrap();
        let out = s.reorbit(now, 30.0, 90.0);
        // Importance 0.9 alone scores 0.225: zone 2 naturally, so everything stale decays.
        assert_eq!(out.decayed, 1199);
        assert_eq!(s.zone_counts()[CLOUD as usize], 1199);
        check_invariants(&s);
    }

    #[test]
    fn timeline_filters_and_orders_by_creation_time() {
        let mut s = Space::default();
        for t in [30.0, 10.0, 20.0, 40.0] {
            s.insert(mem(&format!("at {t}"), 0.5, t), t);
        }
        let all: Vec<f64> = s
            .timeline(None, None, 100)
            .iter()
            .map(|m| m.created_at)
            .collect();
        assert_eq!(all, vec![10.0, 20.0, 30.0, 40.0]);
        let mid: Vec<f64> = s
            .timeline(Some(15.0), Some(30.0), 100)
            .iter()
            .map(|m| m.created_at)
            .collect();
        assert_eq!(mid, vec![20.0, 30.0]);
        assert_eq!(s.timeline(None, None, 1).len(), 1);
    }

    #[test]
    fn pruned_ranking_equals_full_ranking() {
        // Skewed vocabulary: w0 is in most memories, w40+ in few, like natural text.
        let mut seed = 42u64;
        let mut next = move |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut s = Space::default();
        for i in 0..2000 {
            let n = 3 + next(8);
            let mut words = Vec::new();
            for _ in 0..n {
                let k = 1 + next(60);
                words.push(format!("w{}", next(k)));
            }
            s.insert(mem(&words.join(" "), next(11) as f64 / 10.0, 0.0), i as f64);
        }
        let mut pruned_used = 0;
        for _ in 0..300 {
            let (k1, k2) = (1 + next(60), 1 + next(60));
            let (a, b) = (next(k1), next(k2));
            let q = format!("w{a} w{b}");
            for limit in [1, 5, 50] {
                let full = s.rank(&s.index.search(&q, false), None, limit).unwrap();
                let fast = s.search(&q, None, limit);
                let ids = |h: &[Hit]| h.iter().map(|h| h.id).collect::<Vec<_>>();
                assert_eq!(ids(&fast), ids(&full), "query {q:?} limit {limit}");
                if s.rank(&s.index.search(&q, true), None, limit).is_some()
                    && s.index.search(&q, true).omitted_bound > 0.0
                {
                    pruned_used += 1;
                }
            }
        }
        // The test is only meaningful if pruning actually answered a good share of queries.
        assert!(
            pruned_used > 50,
            "pruning answered only {pruned_used} queries"
        );
    }
}
