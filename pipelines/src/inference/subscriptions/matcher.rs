//! Which subscriptions a commit can move, decided without searching.
//!
//! Each subscription keeps what its last search ranked ([`Standing`]): the
//! chunks of its rankings, and for each side the score a newcomer must reach
//! to enter — the vector side's last cosine, the BM25 side's last score
//! (hybrid ranks `max(4k, 50)` candidates per side before fusing; `vector` and
//! `bm25` rank `k`). A ranking not full has no floor: anything may enter.
//!
//! A commit's [`CommitNotice`] touches a subscription when
//! 1. one of its ranked chunks was updated (deleted, edited, re-occurring):
//!    looked up by chunk id;
//! 2. a live updated chunk's vector scores at least its vector floor: one dot
//!    product per subscription and new vector, over the queries laid out as
//!    one matrix;
//! 3. a live updated chunk could score at least its BM25 floor: the chunk's
//!    words look up the subscriptions whose query holds them, and the most the
//!    shared words can add (`idf · (1 + k1)` each) is compared with the floor;
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
use twinflow_sinks::CommitNotice;

/// Margin under a floor that still counts as reaching it (scores are
/// computed in another order by the search; BM25's bounds with the
/// statistics of the last search).
const VECTOR_MARGIN: f32 = 1e-4;
const BM25_SLACK: f32 = 1.05;

/// What one subscription's last search ranked.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Standing {
    /// The query as the vector index scores it (empty without a vector side).
    #[serde(skip)]
    pub vector: Vec<f32>,
    /// The cosine a new chunk must reach to enter the vector ranking
    /// (`None`: no vector side; `f32::MIN`: the ranking is not full).
    pub vector_floor: Option<f32>,
    /// The query's BM25 words, each with the most it adds to a score.
    pub words: Vec<(String, f32)>,
    /// The BM25 score a new chunk must reach (`None`: no BM25 side; `0`: not full).
    pub bm25_floor: Option<f32>,
    /// Every chunk of its rankings (and of its answer's citations).
    pub chunks: Vec<Hash128>,
    /// The corpus's change counter at the last search.
    pub changes_seen: u64,
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
        for (word, _) in &standing.words {
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
        for (word, _) in &old.words {
            unlink(&mut self.by_word, word.as_str(), slot);
        }
        self.floors[slot as usize] = f32::INFINITY;
    }

    /// The standing of `slot`.
    pub fn get(&self, slot: u32) -> Option<&Standing> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// The slots `notice` can move (rules 1–4 of the module's list), given the
    /// words of each of its live chunks, the corpus's change counter after it
    /// and how many changes force BM25's statistics rule.
    pub fn touched(
        &self,
        notice: &CommitNotice,
        words: &[HashSet<String>],
        changes: u64,
        restat_after: u64,
    ) -> (Vec<u32>, Touches) {
        let mut hit = vec![false; self.slots.len()];
        let mut touches = Touches::default();
        let mut mark = |slot: u32, count: &mut usize| {
            if !std::mem::replace(&mut hit[slot as usize], true) {
                *count += 1;
            }
        };
        for id in &notice.touched {
            for &slot in self.by_chunk.get(id).into_iter().flatten() {
                mark(slot, &mut touches.by_chunk);
            }
        }
        for ((_, _, vector), words) in notice.present.iter().zip(words) {
            if let Some(vector) = vector.as_deref().filter(|v| v.len() == self.dim) {
                for (slot, (query, floor)) in self.queries.chunks_exact(self.dim).zip(&self.floors).enumerate() {
                    if *floor != f32::INFINITY && dot(query, vector) >= *floor {
                        mark(slot as u32, &mut touches.by_vector);
                    }
                }
            }
            let mut bounds: HashMap<u32, f32> = HashMap::new();
            for word in words {
                for &slot in self.by_word.get(word.as_str()).into_iter().flatten() {
                    if let Some(standing) = self.get(slot) {
                        let add: f32 = standing.words.iter().filter(|(w, _)| w == word).map(|(_, b)| b).sum();
                        *bounds.entry(slot).or_default() += add;
                    }
                }
            }
            for (slot, bound) in bounds {
                let floor = self.get(slot).and_then(|s| s.bm25_floor).unwrap_or(f32::INFINITY);
                if bound > 0.0 && bound * BM25_SLACK >= floor {
                    mark(slot, &mut touches.by_words);
                }
            }
        }
        for (slot, standing) in self.slots.iter().enumerate() {
            if let Some(standing) = standing
                && standing.bm25_floor.is_some()
                && changes.saturating_sub(standing.changes_seen) > restat_after
            {
                mark(slot as u32, &mut touches.by_statistics);
            }
        }
        let slots = hit.iter().enumerate().filter(|(_, h)| **h).map(|(slot, _)| slot as u32).collect();
        (slots, touches)
    }

    /// Every occupied slot.
    pub fn all(&self) -> Vec<u32> {
        self.slots.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| i as u32).collect()
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

    fn words(texts: &[&str]) -> Vec<HashSet<String>> {
        texts.iter().map(|t| t.split_whitespace().map(str::to_owned).collect()).collect()
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
        // A BM25 subscription on "railroad strike" whose k-th score is 3.
        let b = m.insert(Standing {
            words: vec![("railroad".into(), 2.0), ("strike".into(), 2.5)],
            bm25_floor: Some(3.0),
            chunks: vec![id(3)],
            ..Standing::default()
        });
        // Unrelated: a chunk far from (1, 0) with neither word.
        let n = notice(&[9], vec![(9, "harbour fees", Some(vec![0.0, 1.0]))]);
        assert_eq!(m.touched(&n, &words(&["harbour fees"]), 1, 100).0, Vec::<u32>::new());
        // One of the words only: at most 2.0 · 1.05 < 3.
        let n = notice(&[10], vec![(10, "railroad fees", Some(vec![0.0, 1.0]))]);
        assert!(m.touched(&n, &words(&["railroad fees"]), 2, 100).0.is_empty());
        // Both words could reach 3: touched; a close vector too.
        let n = notice(&[11], vec![(11, "railroad strike", Some(vec![0.9, 0.436]))]);
        let (slots, touches) = m.touched(&n, &words(&["railroad strike"]), 3, 100);
        assert_eq!(slots, vec![a, b]);
        assert_eq!((touches.by_vector, touches.by_words), (1, 1));
        // A ranked chunk deleted.
        let n = notice(&[2], vec![]);
        assert_eq!(m.touched(&n, &[], 4, 100).0, vec![a]);
        // Enough changes since its last search: BM25's statistics moved.
        let n = notice(&[12], vec![]);
        let (slots, touches) = m.touched(&n, &[], 200, 100);
        assert_eq!((slots, touches.by_statistics), (vec![b], 1));
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
        let a = m.insert(Standing {
            vector: vec![1.0, 0.0],
            vector_floor: Some(f32::MIN),
            ..Standing::default()
        });
        let n = notice(&[5], vec![(5, "x", Some(vec![-1.0, 0.0]))]);
        assert_eq!(m.touched(&n, &words(&["x"]), 1, 100).0, vec![a]);
    }
}
