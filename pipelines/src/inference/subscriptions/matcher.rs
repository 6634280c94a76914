//! Which subscriptions a commit can move, decided without searching.
//!
//! Each subscription keeps what its last search ranked ([`Standing`]): the
//! chunks of its rankings, and for each side the score a newcomer must reach
//! to enter — the vector side's last cosine, the BM25 side's last score
//! (hybrid ranks `max(4k, 50)` candidates per side before fusing; `vector` and
//! `bm25` rank `k`). A ranking not full has no floor: anything may enter.
//!
//! A commit's [`CommitNotice`] touches a subscription when
//! 1. one of its ranked chunks was deleted, or (with filters) occurs in
//!    other documents: looked up by chunk id. A deletion of chunks ranked
//!    deep enough in hybrid's two rankings is settled without a search when
//!    the fused top-k is certainly the same ([`Rankings::without`]);
//! 2. a live updated chunk's vector scores at least its vector floor: one dot
//!    product per subscription and new vector, over the queries laid out as
//!    one matrix;
//! 3. a live updated chunk could score at least its BM25 floor: the chunk's
//!    words look up the subscriptions whose query holds them, and the chunk's
//!    BM25 score for the query, computed from its word counts and length with
//!    the idfs of the last search ([`Bm25Query::estimate`]), with a margin
//!    for the index's rounded lengths and statistics that moved since, is
//!    compared with the floor;
//! 4. BM25's corpus statistics moved: more than `restat_share` of the live
//!    chunks changed since its last search (every BM25 score moves with the
//!    corpus, not only those of chunks with its words);
//! 5. the scores' space changed: another adapter projection, or hybrid's
//!    fusion another setting (every subscription).
//!
//! Every other subscription keeps its answer without being looked at beyond
//! the dot product of rule 2. A touched one is searched again, and an event
//! is sent only when its top-k changed.

use std::collections::HashMap;
use std::collections::HashSet;

use twinflow_schemas::Hash128;
use twinflow_sinks::{Bm25Query, CommitNotice};

/// Margin under a floor that still counts as reaching it: scores are
/// computed in another order by the search; BM25's with the index's rounded
/// lengths (up to ~10% higher) and the statistics of the last search.
const VECTOR_MARGIN: f32 = 1e-4;
const BM25_SLACK: f32 = 1.25;

/// What one subscription's last search ranked.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standing {
    /// The query as the vector index scores it (empty without a vector side).
    #[serde(skip)]
    pub vector: Vec<f32>,
    /// The cosine a new chunk must reach to enter the vector ranking
    /// (`None`: no vector side; `f32::MIN`: the ranking is not full).
    pub vector_floor: Option<f32>,
    /// The query as BM25 weighed it at the last search (`None`: no BM25 side).
    pub bm25: Option<Bm25Query>,
    /// The BM25 score a new chunk must reach (`None`: no BM25 side; `0`: not full).
    pub bm25_floor: Option<f32>,
    /// Every chunk of its rankings (and of its answer's citations).
    pub chunks: Vec<Hash128>,
    /// The corpus's change counter at the last search.
    pub changes_seen: u64,
    /// Hybrid's two rankings as fused (`None` in `vector` and `bm25` modes).
    pub rankings: Option<Rankings>,
    /// Whether the search has filters (then a chunk's occurrences matter too).
    pub filtered: bool,
}

/// A hybrid subscription's rankings: enough to tell, without searching,
/// whether deleting some of their chunks changes the fused top-k.
///
/// Each ranking is known down to its last chunk still live; `unknown` more
/// places below it are taken by chunks the search did not rank then (a
/// deleted chunk's place): they score at most `weight / (rrf_k + known + 1)`
/// in that ranking, since every one of them ranked below every known chunk.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rankings {
    pub vector_weight: f32,
    pub bm25_weight: f32,
    pub rrf_k: f32,
    pub k: usize,
    pub vector: Vec<Hash128>,
    pub vector_unknown: usize,
    pub bm25: Vec<Hash128>,
    pub bm25_unknown: usize,
    /// The fused top-k, best first.
    pub top: Vec<Hash128>,
}

impl Rankings {
    /// The rankings once `removed` chunks are gone, when the fused top-k is
    /// then certainly the same (ids and order): no chunk outside it, known
    /// or not, can reach its k-th score, and none of it can gain from the
    /// unknown places. `None`: a search must tell.
    pub fn without(&self, removed: &HashSet<Hash128>) -> Option<Rankings> {
        let keep =
            |ids: &[Hash128]| -> Vec<Hash128> { ids.iter().filter(|id| !removed.contains(id)).copied().collect() };
        let (vector, bm25) = (keep(&self.vector), keep(&self.bm25));
        let vector_unknown = self.vector_unknown + self.vector.len() - vector.len();
        let bm25_unknown = self.bm25_unknown + self.bm25.len() - bm25.len();
        let tail = |weight: f32, unknown: usize, known: usize| {
            if unknown > 0 { weight / (self.rrf_k + known as f32 + 1.0) } else { 0.0 }
        };
        let (vector_tail, bm25_tail) =
            (tail(self.vector_weight, vector_unknown, vector.len()), tail(self.bm25_weight, bm25_unknown, bm25.len()));
        let fused = twinflow_sinks::reciprocal_rank(
            &[(self.vector_weight, &vector[..]), (self.bm25_weight, &bm25[..])],
            self.rrf_k,
        );
        if fused.len() < self.k {
            return None;
        }
        let in_vector: HashSet<&Hash128> = vector.iter().collect();
        let in_bm25: HashSet<&Hash128> = bm25.iter().collect();
        let gain = |id: &Hash128| {
            (if in_vector.contains(id) { 0.0 } else { vector_tail })
                + (if in_bm25.contains(id) { 0.0 } else { bm25_tail })
        };
        let (top, rest) = fused.split_at(self.k);
        let kth = top[self.k - 1].1;
        let certain = top.iter().all(|(id, _)| gain(id) == 0.0)
            && rest.iter().all(|(id, score)| score + gain(id) < kth)
            && vector_tail + bm25_tail < kth;
        let top: Vec<Hash128> = top.iter().map(|(id, _)| *id).collect();
        (certain && top == self.top).then(|| Rankings {
            vector,
            vector_unknown,
            bm25,
            bm25_unknown,
            top,
            ..self.clone()
        })
    }
}

/// The index of every subscription's [`Standing`], by slot.
#[derive(Debug, Default)]
pub struct Matcher {
    dim: usize,
    /// Slot → the subscription's standing (`None`: a free slot).
    slots: Vec<Option<Standing>>,
    free: Vec<u32>,
    by_chunk: HashMap<Hash128, Vec<u32>>,
    by_word: HashMap<String, Vec<u32>>,
    /// Row `slot` is that subscription's query vector (zeros without one).
    queries: Vec<f32>,
    /// Per slot, the vector floor (`+inf` without a vector side).
    floors: Vec<f32>,
}

/// Why subscriptions were touched, counted per notice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Touches {
    pub by_chunk: usize,
    pub by_vector: usize,
    pub by_words: usize,
    pub by_statistics: usize,
}

impl Matcher {
    pub fn new(dim: usize) -> Self {
        Self { dim, ..Self::default() }
    }

    /// Live subscriptions.
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Places `standing` in a new slot.
    pub fn insert(&mut self, standing: Standing) -> u32 {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(None);
                self.queries.resize(self.queries.len() + self.dim, 0.0);
                self.floors.push(f32::INFINITY);
                (self.slots.len() - 1) as u32
            }
        };
        self.set(slot, standing);
        slot
    }

    /// Replaces the standing of `slot`.
    pub fn set(&mut self, slot: u32, standing: Standing) {
        self.clear(slot);
        let i = slot as usize;
        for id in &standing.chunks {
            self.by_chunk.entry(*id).or_default().push(slot);
        }
        for (word, _) in standing.bm25.iter().flat_map(|q| &q.words) {
            let slots = self.by_word.entry(word.clone()).or_default();
            if slots.last() != Some(&slot) {
                slots.push(slot);
            }
        }
        let row = &mut self.queries[i * self.dim..(i + 1) * self.dim];
        match standing.vector_floor {
            Some(floor) if standing.vector.len() == self.dim => {
                row.copy_from_slice(&standing.vector);
                self.floors[i] = floor - VECTOR_MARGIN;
            }
            _ => {
                row.fill(0.0);
                self.floors[i] = f32::INFINITY;
            }
        }
        self.slots[i] = Some(standing);
    }

    /// Frees `slot`.
    pub fn remove(&mut self, slot: u32) {
        self.clear(slot);
        self.free.push(slot);
    }

    fn clear(&mut self, slot: u32) {
        let Some(old) = self.slots.get_mut(slot as usize).and_then(Option::take) else { return };
        for id in &old.chunks {
            unlink(&mut self.by_chunk, id, slot);
        }
        for (word, _) in old.bm25.iter().flat_map(|q| &q.words) {
            unlink(&mut self.by_word, word.as_str(), slot);
        }
        self.floors[slot as usize] = f32::INFINITY;
    }

    /// The standing of `slot`.
    pub fn get(&self, slot: u32) -> Option<&Standing> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// The slots `notice` can move (rules 1–4 of the module's list), each
    /// with whether more than the deletion of ranked chunks touched it, given
    /// the word counts and length of each of its live chunks, the corpus's
    /// change counter after it and how many changes force BM25's statistics rule.
    pub fn touched(
        &self,
        notice: &CommitNotice,
        words: &[(HashMap<String, u32>, u32)],
        changes: u64,
        restat_after: u64,
    ) -> (Vec<(u32, bool)>, Touches) {
        // Per slot: touched, and touched by more than the deletion of ranked chunks.
        let mut hit = vec![false; self.slots.len()];
        let mut hard = vec![false; self.slots.len()];
        let mut touches = Touches::default();
        let mut mark = |slot: u32, count: &mut usize, by_more: bool| {
            hard[slot as usize] |= by_more;
            if !std::mem::replace(&mut hit[slot as usize], true) {
                *count += 1;
            }
        };
        let live: HashSet<&Hash128> = notice.present.iter().map(|(id, _, _)| id).collect();
        for id in &notice.touched {
            let still_live = live.contains(id);
            for &slot in self.by_chunk.get(id).into_iter().flatten() {
                // A ranked chunk still live kept its text and vectors (its id is their hash): only
                // its occurrences changed, which matter to a subscription with filters alone.
                if !still_live {
                    mark(slot, &mut touches.by_chunk, false);
                } else if self.get(slot).is_some_and(|s| s.filtered) {
                    mark(slot, &mut touches.by_chunk, true);
                }
            }
        }
        for ((_, _, vector), words) in notice.present.iter().zip(words) {
            if let Some(vector) = vector.as_deref().filter(|v| v.len() == self.dim) {
                for (slot, (query, floor)) in self.queries.chunks_exact(self.dim).zip(&self.floors).enumerate() {
                    if *floor != f32::INFINITY && dot(query, vector) >= *floor {
                        mark(slot as u32, &mut touches.by_vector, true);
                    }
                }
            }
            let (counts, len) = words;
            let mut seen: HashSet<u32> = HashSet::new();
            for word in counts.keys() {
                for &slot in self.by_word.get(word.as_str()).into_iter().flatten() {
                    if !seen.insert(slot) {
                        continue;
                    }
                    let Some(standing) = self.get(slot) else { continue };
                    let (Some(query), Some(floor)) = (&standing.bm25, standing.bm25_floor) else { continue };
                    let estimate = query.estimate(counts, *len);
                    if estimate > 0.0 && estimate * BM25_SLACK >= floor {
                        mark(slot, &mut touches.by_words, true);
                    }
                }
            }
        }
        for (slot, standing) in self.slots.iter().enumerate() {
            if let Some(standing) = standing
                && standing.bm25_floor.is_some()
                && changes.saturating_sub(standing.changes_seen) > restat_after
            {
                mark(slot as u32, &mut touches.by_statistics, true);
            }
        }
        let slots = hit
            .iter()
            .zip(&hard)
            .enumerate()
            .filter(|(_, (h, _))| **h)
            .map(|(slot, (_, hard))| (slot as u32, *hard))
            .collect();
        (slots, touches)
    }

    /// Every occupied slot (each to be searched again).
    pub fn all(&self) -> Vec<(u32, bool)> {
        self.slots.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| (i as u32, true)).collect()
    }
}

fn unlink<K, Q>(map: &mut HashMap<K, Vec<u32>>, key: &Q, slot: u32)
where
    K: std::hash::Hash + Eq + std::borrow::Borrow<Q>,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(slots) = map.get_mut(key) {
        slots.retain(|s| *s != slot);
        if slots.is_empty() {
            map.remove(key);
        }
    }
}

/// Dot product with eight accumulators (vectorised by the compiler).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, a_rest) = a.split_at(a.len() / 8 * 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Hash128 {
        Hash128(n)
    }

    fn notice(touched: &[u128], present: Vec<(u128, &str, Option<Vec<f32>>)>) -> CommitNotice {
        CommitNotice {
            epoch: 1,
            touched: touched.iter().map(|n| id(*n)).collect(),
            present: present.into_iter().map(|(n, t, v)| (id(n), t.to_owned(), v)).collect(),
            ..CommitNotice::default()
        }
    }

    fn words(texts: &[&str]) -> Vec<(HashMap<String, u32>, u32)> {
        texts
            .iter()
            .map(|t| {
                let mut counts: HashMap<String, u32> = HashMap::new();
                for w in t.split_whitespace() {
                    *counts.entry(w.to_owned()).or_default() += 1;
                }
                (counts, t.split_whitespace().count() as u32)
            })
            .collect()
    }

    #[test]
    fn a_commit_touches_only_what_can_move_a_ranking() {
        let mut m = Matcher::new(2);
        // A vector subscription near (1, 0) whose 2nd-best is 0.8.
        let a = m.insert(Standing {
            vector: vec![1.0, 0.0],
            vector_floor: Some(0.8),
            chunks: vec![id(1), id(2)],
            ..Standing::default()
        });
        // A BM25 subscription on "railroad strike" (idfs 2 and 2.5) whose k-th score is 3.
        let b = m.insert(Standing {
            bm25: Some(Bm25Query { words: vec![("railroad".into(), 2.0), ("strike".into(), 2.5)], avg_len: 2.0 }),
            bm25_floor: Some(3.0),
            chunks: vec![id(3)],
            ..Standing::default()
        });
        // Unrelated: a chunk far from (1, 0) with neither word.
        let n = notice(&[9], vec![(9, "harbour fees", Some(vec![0.0, 1.0]))]);
        assert!(m.touched(&n, &words(&["harbour fees"]), 1, 100).0.is_empty());
        // One of the words only: 2 · 2.2 / (1 + 1.2) = 2, and 2 · 1.25 < 3.
        let n = notice(&[10], vec![(10, "railroad fees", Some(vec![0.0, 1.0]))]);
        assert!(m.touched(&n, &words(&["railroad fees"]), 2, 100).0.is_empty());
        // Both words could reach 3: touched; a close vector too.
        let n = notice(&[11], vec![(11, "railroad strike", Some(vec![0.9, 0.436]))]);
        let (slots, touches) = m.touched(&n, &words(&["railroad strike"]), 3, 100);
        assert_eq!(slots, vec![(a, true), (b, true)]);
        assert_eq!((touches.by_vector, touches.by_words), (1, 1));
        // A ranked chunk deleted.
        let n = notice(&[2], vec![]);
        assert_eq!(m.touched(&n, &[], 4, 100).0, vec![(a, false)]);
        // Enough changes since its last search: BM25's statistics moved.
        let n = notice(&[12], vec![]);
        let (slots, touches) = m.touched(&n, &[], 200, 100);
        assert_eq!((slots, touches.by_statistics), (vec![(b, true)], 1));
        // A new standing replaces the old links; removal frees the slot.
        m.set(a, Standing { vector: vec![0.0, 1.0], vector_floor: Some(0.5), ..Standing::default() });
        let n = notice(&[2], vec![]);
        assert!(m.touched(&n, &[], 4, 100).0.is_empty());
        m.remove(b);
        assert_eq!(m.len(), 1);
        assert_eq!(m.insert(Standing::default()), b);
    }

    #[test]
    fn a_ranking_not_full_lets_anything_in() {
        let mut m = Matcher::new(2);
        let a = m.insert(Standing { vector: vec![1.0, 0.0], vector_floor: Some(f32::MIN), ..Standing::default() });
        let n = notice(&[5], vec![(5, "x", Some(vec![-1.0, 0.0]))]);
        assert_eq!(m.touched(&n, &words(&["x"]), 1, 100).0, vec![(a, true)]);
    }

    #[test]
    fn deleting_deep_ranked_chunks_keeps_a_certain_top_k() {
        let ids = |ns: &[u128]| ns.iter().map(|n| id(*n)).collect::<Vec<_>>();
        let gone = |ns: &[u128]| ns.iter().map(|n| id(*n)).collect::<HashSet<_>>();
        // Both rankings agree on 1, 2 at the top; 50 places each.
        let vector: Vec<u128> = (1..=50).collect();
        let bm25: Vec<u128> = [1, 2].into_iter().chain(100..148).collect();
        let rankings = Rankings {
            vector_weight: 1.0,
            bm25_weight: 1.0,
            rrf_k: 60.0,
            k: 2,
            vector: ids(&vector),
            bm25: ids(&bm25),
            top: ids(&[1, 2]),
            ..Rankings::default()
        };
        // A chunk deep in one ranking: the top-2 (in both rankings) cannot be reached.
        let kept = rankings.without(&gone(&[40])).expect("certain");
        assert_eq!((kept.vector.len(), kept.vector_unknown), (49, 1));
        // Twice more: still certain, the unknown places add up.
        let kept = kept.without(&gone(&[30, 120])).expect("certain");
        assert_eq!((kept.vector_unknown, kept.bm25_unknown), (2, 1));
        // A top chunk deleted: only a search can tell what replaces it.
        assert!(rankings.without(&gone(&[2])).is_none());
        // With k = 3 the third place is 3 (vector only) against 100 (BM25 only), tied at 1/63 and
        // ordered by id: once 50 is deleted, 100 could take the unknown vector place and pass 3.
        let three = Rankings { k: 3, top: ids(&[1, 2, 3]), ..rankings.clone() };
        assert!(three.without(&gone(&[50])).is_none(), "100 could gain from an unknown vector place");
        // Deleting 120 frees a BM25 place 3 itself could take, rising within the top-3: a search tells.
        assert!(three.without(&gone(&[120])).is_none(), "3 could gain from an unknown BM25 place");
    }
}
