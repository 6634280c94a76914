//! Weighted reciprocal-rank fusion: several rankings of the same kind of
//! key merged into one, each key scored `Σ weight / (rrf_k + rank)` over
//! the rankings it appears in (`rank` counted from 1).
//!
//! Hybrid search fuses the vector and BM25 rankings with it
//! ([`Store::search_mode`](crate::Store::search_mode)); any caller that
//! merges ranked lists (one per query phrasing, say) can do the same.

use std::collections::HashMap;
use std::hash::Hash;

/// Fuses `rankings` — each `(weight, keys best first)` — into one list of
/// `(key, fused score)`, best first.
///
/// A key scores `weight / (rrf_k + rank)` in each ranking it appears in
/// (`rank` = 1 for the first key), summed over the rankings in the order
/// given; a key that a ranking lists twice scores at both places. Every
/// key of every ranking is in the answer, also those of a ranking whose
/// weight is 0. Equal fused scores are ordered by key (ascending), so the
/// answer does not depend on hashing. Truncate it to keep the best `k`.
///
/// The usual `rrf_k` is 60: the first places then differ little, and a key
/// found by several rankings beats one found high by a single ranking.
///
/// ```
/// use twinflow_sinks::reciprocal_rank;
///
/// let vector = [3, 1, 2];
/// let bm25 = [1, 4];
/// let fused = reciprocal_rank(&[(1.0, &vector[..]), (1.0, &bm25[..])], 60.0);
/// let keys: Vec<i32> = fused.iter().map(|(key, _)| *key).collect();
/// assert_eq!(keys, [1, 3, 4, 2]); // 1 is in both rankings, then by best rank
/// assert_eq!(fused[0].1, 1.0 / 62.0 + 1.0 / 61.0);
/// ```
pub fn reciprocal_rank<K: Eq + Hash + Ord + Copy>(rankings: &[(f32, &[K])], rrf_k: f32) -> Vec<(K, f32)> {
    let mut fused: HashMap<K, f32> = HashMap::new();
    for (weight, keys) in rankings {
        for (rank, key) in keys.iter().enumerate() {
            // Written as the sum it has always been, so scores stay bit for bit the same.
            *fused.entry(*key).or_default() += weight / (rrf_k + rank as f32 + 1.0);
        }
    }
    let mut ranked: Vec<(K, f32)> = fused.into_iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

#[cfg(test)]
mod tests {
    use twinflow_schemas::Hash128;

    use super::reciprocal_rank;

    #[test]
    fn the_doc_example() {
        let fused = reciprocal_rank(&[(1.0, &[3, 1, 2][..]), (1.0, &[1, 4][..])], 60.0);
        assert_eq!(fused, [(1, 1.0 / 62.0 + 1.0 / 61.0), (3, 1.0 / 61.0), (4, 1.0 / 62.0), (2, 1.0 / 63.0)]);
    }

    #[test]
    fn scores_are_weighted_reciprocal_ranks_summed() {
        let vector = [Hash128(10), Hash128(20)];
        let bm25 = [Hash128(20), Hash128(30)];
        let fused = reciprocal_rank(&[(0.5, &vector[..]), (2.0, &bm25[..])], 10.0);
        let expected = [(Hash128(20), 0.5 / 12.0 + 2.0 / 11.0), (Hash128(30), 2.0 / 12.0), (Hash128(10), 0.5 / 11.0)];
        assert_eq!(fused, expected);
    }

    #[test]
    fn equal_scores_are_ordered_by_key() {
        // Neighbours swapped: 7 and 3 score the same sum, and so do 5 and 1.
        let a = [Hash128(7), Hash128(3), Hash128(5), Hash128(1)];
        let b = [Hash128(3), Hash128(7), Hash128(1), Hash128(5)];
        let fused = reciprocal_rank(&[(1.0, &a[..]), (1.0, &b[..])], 60.0);
        assert_eq!(fused[0].1, fused[1].1);
        let keys: Vec<Hash128> = fused.iter().map(|(key, _)| *key).collect();
        assert_eq!(keys, [Hash128(3), Hash128(7), Hash128(1), Hash128(5)]);
        let keys: Vec<Hash128> = reciprocal_rank(&[(1.0, &a[..])], 60.0).iter().map(|(key, _)| *key).collect();
        assert_eq!(keys, a, "one ranking keeps its order");
    }

    #[test]
    fn a_key_in_several_rankings_beats_a_single_first_place() {
        let phrasings: [&[u32]; 3] = [&[1, 9], &[2, 9], &[3, 9]];
        let rankings: Vec<(f32, &[u32])> = phrasings.iter().map(|keys| (1.0, *keys)).collect();
        let fused = reciprocal_rank(&rankings, 60.0);
        assert_eq!(fused[0].0, 9);
        assert_eq!(fused.len(), 4);
    }

    #[test]
    fn zero_weights_and_empty_rankings() {
        let fused = reciprocal_rank(&[(0.0, &[4u8, 2][..]), (1.0, &[][..])], 60.0);
        assert_eq!(fused, [(2, 0.0), (4, 0.0)], "keys of a weight-0 ranking stay, scored 0");
        assert!(reciprocal_rank::<u8>(&[], 60.0).is_empty());
    }

    #[test]
    fn a_key_listed_twice_scores_at_both_places() {
        let fused = reciprocal_rank(&[(1.0, &[5u8, 6, 5][..])], 0.0);
        assert_eq!(fused, [(5, 1.0 + 1.0 / 3.0), (6, 0.5)]);
    }
}
