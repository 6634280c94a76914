//! Index shards: which shard holds a chunk, and running one piece of work
//! per shard, on its own thread when the work is big enough to repay it.
//!
//! Both live indexes (BM25 in `text_index.rs`, HNSW in `vector_index.rs`)
//! are split by `chunk_id` into the same number of shards, one per engine
//! worker by default (`search.shards`). A query goes to every shard and
//! their best are merged into one top-k; a commit updates the shards it
//! touches side by side.

use twinflow_schemas::Hash128;

/// Shards searched or updated on their own threads once they hold this
/// many entries in all; below it one thread does all (a thread costs more
/// than a small shard's search).
pub(crate) const PARALLEL_FROM: usize = 50_000;

/// The shard of `chunk_id` among `shards`: from its high bits (chunk ids
/// are hashes; the low bits already pick the engine's workers).
pub(crate) fn shard_of(chunk_id: &Hash128, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    ((chunk_id.0 >> 64) as u64 % shards as u64) as usize
}

/// `work` applied to every item, in order; on scoped threads when
/// `parallel` and there is more than one item.
pub(crate) fn fan_out<T: Sync, R: Send>(items: &[T], parallel: bool, work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if !parallel || items.len() < 2 {
        return items.iter().map(&work).collect();
    }
    std::thread::scope(|scope| {
        let work = &work;
        let handles: Vec<_> = items.iter().map(|item| scope.spawn(move || work(item))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_spread_chunks_and_fan_out_keeps_order() {
        let mut counts = [0usize; 4];
        for i in 0..4000u128 {
            counts[shard_of(&Hash128::of(&i.to_le_bytes()), 4)] += 1;
        }
        assert!(counts.iter().all(|n| (800..1200).contains(n)), "{counts:?}");
        assert_eq!(shard_of(&Hash128(u128::MAX), 1), 0);
        let items: Vec<u32> = (0..8).collect();
        assert_eq!(fan_out(&items, true, |i| i * 2), fan_out(&items, false, |i| i * 2));
    }
}
