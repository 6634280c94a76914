//! Index shards: which shard holds a chunk, and running one piece of work
//! per shard, on its own thread when the work is big enough to repay it.
//!
//! Both live indexes (BM25 in `text_index.rs`, HNSW in `vector_index/`)
//! are split by `chunk_id` into the same number of shards (`search.shards`,
//! 2 by default, or one per engine worker). A query goes to every shard and
//! their best are merged into one top-k; a commit updates the shards it
//! touches side by side.
//!
//! BM25 scores use the statistics of the whole live corpus, so they do not
//! depend on the sharding, except that a multi-word score is a sum whose
//! order tantivy picks per segment: two chunks can swap places when their
//! scores differ by a rounding (`twinflow-bench shards`: 199 of 200 answers
//! equal on 4 shards and on 1). A fixed number of shards keeps answers
//! identical whatever the workers.

use twinflow_schemas::Hash128;

/// Shards searched or updated side by side once they hold this many
/// entries in all; below it one thread does all (handing work to another
/// thread costs more than a small shard's search).
pub(crate) const PARALLEL_FROM: usize = 20_000;

/// The threads that run shards side by side: the store's own, so index
/// work never waits behind training or embedding on rayon's global pool.
fn pool() -> &'static rayon::ThreadPool {
    static POOL: std::sync::OnceLock<rayon::ThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(16);
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("twinflow-shards-{i}"))
            .build()
            .expect("a thread pool of a few threads starts")
    })
}

/// The shard of `chunk_id` among `shards`: from its high bits (chunk ids
/// are hashes; the low bits already pick the engine's workers).
pub(crate) fn shard_of(chunk_id: &Hash128, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    ((chunk_id.0 >> 64) as u64 % shards as u64) as usize
}

/// `work` applied to every item, in order; side by side on the shard
/// threads when `parallel` and there is more than one item.
pub(crate) fn fan_out<T: Sync, R: Send>(items: &[T], parallel: bool, work: impl Fn(&T) -> R + Sync) -> Vec<R> {
    if !parallel || items.len() < 2 {
        return items.iter().map(&work).collect();
    }
    use rayon::prelude::*;
    pool().install(|| items.par_iter().map(&work).collect())
}

/// `work` on every item, side by side on the shard threads.
pub(crate) fn fan_out_mut<T: Send>(items: &mut [T], work: impl Fn(&mut T) + Sync) {
    use rayon::prelude::*;
    pool().install(|| items.par_iter_mut().for_each(&work));
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
