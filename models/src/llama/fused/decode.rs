//! One decoded token with every thread on the whole step.
//!
//! A decoding step is ~7 small products per layer, each a few hundred
//! microseconds of work; handing each to rayon cost a third of the step in
//! wake-ups, sleeps and yields (perf, SmolLM2 on 2 threads). Here the pool's
//! threads are woken once per token (`rayon::broadcast`) and walk the layers
//! together, as llama.cpp's do: each computes its share of a product's rows and publishes it, a spin
//! barrier waits for the others, and every thread then reads the whole
//! result and keeps its own copy of the hidden state (a few KB: recomputing
//! a norm costs less than another barrier).
//!
//! ```text
//!  per layer, thread t of T:   x ─ norm ─ Q8 ─ rows t/T of QKV ─┤barrier├─ RoPE ─ attention over positions t/T ─┤
//!     ├─ combine (softmax maxima, sums) ─ Q8 ─ rows t/T of out ─┤├─ x += ─ norm ─ Q8 ─ gate, up rows t/T ─ SiLU·up ─┤
//!     ├─ Q8 ─ rows t/T of down ─┤├─ x +=           then: norm ─ rows t/T of the logits
//! ```
//!
//! Attention is split by positions, not heads (each thread a softmax over
//! its positions, combined by their maxima and sums, as flash decoding
//! does), so it is balanced whatever the head count; the cache is only read
//! during the step, the new position's keys and values come from the step's
//! own QKV and are appended after it.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use super::{FusedCache, FusedLlama, push_half, rms_norm_row, round_half};
use crate::gguf::half::f16_to_f32;

/// Held while a step runs on the pool's threads.
static DECODING: Mutex<()> = Mutex::new(());

/// Spins before a waiting thread starts yielding its core.
const SPINS: u32 = 1 << 14;

impl FusedLlama {
    /// Runs the token embedded as `x` `[h]` at the position after `cache`
    /// on every thread of the current rayon pool, and returns its logits.
    pub(super) fn decode(&self, x: &[f32], cache: &mut FusedCache) -> Vec<f32> {
        let layers = self.blocks.len();
        let (h, f) = (self.config.hidden_size, self.config.intermediate_size);
        cache.k.resize_with(layers, Vec::new);
        cache.v.resize_with(layers, Vec::new);
        // What `rayon::broadcast` runs on; called from inside the pool (a
        // worker would block on DECODING while another step's broadcast waits
        // for it), the step runs on this thread alone.
        let inside = rayon::current_thread_index().is_some();
        let threads = if inside { 1 } else { rayon::current_num_threads() };
        let step = Step {
            model: self,
            cache,
            start: cache.len,
            threads,
            barrier: Barrier::new(threads),
            qkv: Rows::new(self.blocks.first().map_or(0, |b| b.qkv.rows()), threads),
            attention: Exchange::new(threads),
            out: Rows::new(h, threads),
            act: Rows::new(f, threads),
            down: Rows::new(h, threads),
            logits: Rows::new(self.output.rows(), threads),
            new_kv: Mutex::new(vec![Vec::new(); layers]),
        };
        {
            // Two steps broadcast at once could each hold a thread at its barrier
            // waiting for the thread the other holds: one step at a time.
            if inside {
                step.run(0, x);
            } else {
                let _one = DECODING.lock().unwrap_or_else(PoisonError::into_inner);
                rayon::broadcast(|ctx| step.run(ctx.index(), x));
            }
        }
        let Step { logits, new_kv, .. } = step;
        let new_kv = new_kv.into_inner().unwrap_or_else(PoisonError::into_inner);
        let kv = self.config.kv_dim();
        for (layer, row) in new_kv.into_iter().enumerate() {
            push_half(&mut cache.k[layer], &row[..kv]);
            push_half(&mut cache.v[layer], &row[kv..]);
        }
        cache.len += 1;
        let mut values = Vec::new();
        logits.gather(&mut values);
        values
    }
}

/// What the threads of one step share.
struct Step<'a> {
    model: &'a FusedLlama,
    cache: &'a FusedCache,
    /// The new token's position.
    start: usize,
    threads: usize,
    barrier: Barrier,
    qkv: Rows,
    attention: Exchange,
    out: Rows,
    act: Rows,
    down: Rows,
    logits: Rows,
    /// Per layer, the new position's key then value row (written by thread 0).
    new_kv: Mutex<Vec<Vec<f32>>>,
}

impl Step<'_> {
    /// Thread `t`'s walk through the layers.
    fn run(&self, t: usize, x0: &[f32]) {
        let _abort = AbortOnPanic(&self.barrier);
        let (m, c) = (self.model, &self.model.config);
        let (d, h, f) = (c.head_dim, c.hidden_size, c.intermediate_size);
        let (qd, kv, eps) = (c.q_dim(), c.kv_dim(), c.rms_eps as f32);
        let share = |n: usize| n * t / self.threads..n * (t + 1) / self.threads;
        let mut x = x0.to_vec();
        let (mut normed, mut all) = (vec![0f32; h], Vec::new());
        let mut up = Vec::new();
        // A product's rows, chunk by chunk as the threads take them.
        let product = |rows: &Rows, matrix: &super::Matrix, input: &[f32]| {
            let q = matrix.quantized(input);
            rows.take(|range, out| matrix.rows_into(range, input, &q, out));
        };
        for (layer, block) in m.blocks.iter().enumerate() {
            normed.copy_from_slice(&x);
            rms_norm_row(&mut normed, &block.attn_norm, eps);
            product(&self.qkv, &block.qkv, &normed);
            self.collect(t, &self.qkv, &mut all);
            if let Some(bias) = &block.qkv_bias {
                all.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
            }
            for (j, head) in all[..qd + kv].chunks_exact_mut(d).enumerate() {
                if let Some([q_norm, k_norm]) = &block.qk_norm {
                    rms_norm_row(head, if j < c.num_heads { q_norm } else { k_norm }, eps);
                }
                m.rotate(head, self.start);
            }
            // The new position's key and value as the cache will hold them.
            round_half(&mut all[qd..]);
            if t == 0 {
                self.new_kv.lock().unwrap_or_else(PoisonError::into_inner)[layer] = all[qd..].to_vec();
            }
            let partial = self.attention_part(layer, &all, share(self.start + 1));
            self.attention.publish(t, &partial);
            self.barrier.wait();
            self.attention.gather(&mut all);
            let context = combine(&all, c.num_heads, d);
            product(&self.out, &block.out, &context);
            self.collect(t, &self.out, &mut all);
            x.iter_mut().zip(&all).for_each(|(x, y)| *x += y);

            normed.copy_from_slice(&x);
            rms_norm_row(&mut normed, &block.ffn_norm, eps);
            // Gate row r and up row f + r together: a chunk of the activations.
            let q = block.gate_up.quantized(&normed);
            self.act.take(|rows, gate| {
                up.resize(rows.len(), 0.0);
                block.gate_up.rows_into(rows.clone(), &normed, &q, gate);
                block.gate_up.rows_into(f + rows.start..f + rows.end, &normed, &q, &mut up);
                gate.iter_mut().zip(&up).for_each(|(g, u)| *g = *g / (1.0 + (-*g).exp()) * u);
            });
            self.collect(t, &self.act, &mut all);
            product(&self.down, &block.down, &all);
            self.collect(t, &self.down, &mut all);
            x.iter_mut().zip(&all).for_each(|(x, y)| *x += y);
        }
        rms_norm_row(&mut x, &m.norm, eps);
        product(&self.logits, &m.output, &x);
    }

    /// Once every thread has computed its chunks (the barrier), all of `rows`
    /// into `into`; thread `t` = 0 then makes the chunks available again (every
    /// thread has taken its last one, and the next take is a layer later,
    /// behind more barriers).
    fn collect(&self, t: usize, rows: &Rows, into: &mut Vec<f32>) {
        self.barrier.wait();
        rows.gather(into);
        if t == 0 {
            rows.reset();
        }
    }

    /// This thread's part of one query's attention in `layer`: over the
    /// cached `positions` (the last one the new token, from `qkv`), per head
    /// the maximum score, the sum of `e^(score − max)` and the values
    /// weighted by them: `[max; heads] [sum; heads] [head · d]`.
    fn attention_part(&self, layer: usize, qkv: &[f32], positions: Range<usize>) -> Vec<f32> {
        let c = &self.model.config;
        let (heads, d, qd, kv) = (c.num_heads, c.head_dim, c.q_dim(), c.kv_dim());
        let mut part = vec![0f32; heads * (2 + d)];
        part[..heads].fill(f32::NEG_INFINITY);
        if positions.is_empty() {
            return part;
        }
        let (k, v) = (&self.cache.k[layer], &self.cache.v[layer]);
        pulp::Arch::new().dispatch(Attend {
            q: &qkv[..qd],
            new_k: &qkv[qd..qd + kv],
            new_v: &qkv[qd + kv..],
            k,
            v,
            start: self.start,
            positions,
            heads,
            group: heads / c.num_kv_heads,
            d,
            kv,
            part: &mut part,
        });
        part
    }
}

/// One thread's attention over its positions, compiled for this CPU's SIMD.
struct Attend<'a> {
    q: &'a [f32],
    new_k: &'a [f32],
    new_v: &'a [f32],
    /// The cached rows (positions before `start`) in half precision.
    k: &'a [u16],
    v: &'a [u16],
    start: usize,
    positions: Range<usize>,
    heads: usize,
    group: usize,
    d: usize,
    kv: usize,
    part: &'a mut [f32],
}

impl<'a> pulp::WithSimd for Attend<'a> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, simd: S) {
        let Attend { q, new_k, new_v, k, v, start, positions, heads, group, d, kv, part } = self;
        let n = positions.len();
        let scale = 1.0 / (d as f32).sqrt();
        let mut rows = vec![0f32; ROWS_AT_ONCE * kv];
        // Rows from..to of the keys or values as f32: the cache's, then the new token's.
        let widen = |rows: &mut [f32], cache: &[u16], new: &[f32], from: usize, to: usize| {
            let cached = to.min(start).max(from);
            f16_to_f32(&cache[from * kv..cached * kv], &mut rows[..(cached - from) * kv]);
            if to > start {
                rows[(cached - from) * kv..][..kv].copy_from_slice(new);
            }
        };
        let mut scores = vec![0f32; heads * n];
        for from in positions.clone().step_by(ROWS_AT_ONCE) {
            let to = (from + ROWS_AT_ONCE).min(positions.end);
            widen(&mut rows, k, new_k, from, to);
            for (i, key) in rows[..(to - from) * kv].chunks_exact(kv).enumerate() {
                let i = from - positions.start + i;
                for head in 0..heads {
                    let g = head / group;
                    scores[head * n + i] = super::dot(simd, &q[head * d..][..d], &key[g * d..][..d]) * scale;
                }
            }
        }
        let (maxima, rest) = part.split_at_mut(heads);
        let (sums, acc) = rest.split_at_mut(heads);
        for head in 0..heads {
            let scores = &mut scores[head * n..][..n];
            // Over 16 lanes each: a fold of one accumulator would chain every position on the last.
            let max = crate::bert::fused::lanes(scores, f32::NEG_INFINITY, f32::max, f32::max);
            scores.iter_mut().for_each(|s| *s = crate::bert::fused::exp(*s - max));
            maxima[head] = max;
            sums[head] = crate::bert::fused::lanes(scores, 0.0, |a, b| a + b, |a, b| a + b);
        }
        for from in positions.clone().step_by(ROWS_AT_ONCE) {
            let to = (from + ROWS_AT_ONCE).min(positions.end);
            widen(&mut rows, v, new_v, from, to);
            for (i, value) in rows[..(to - from) * kv].chunks_exact(kv).enumerate() {
                let i = from - positions.start + i;
                for (head, out) in acc.chunks_exact_mut(d).enumerate() {
                    let g = head / group;
                    let weight = scores[head * n + i];
                    out.iter_mut().zip(&value[g * d..][..d]).for_each(|(o, x)| *o += weight * x);
                }
            }
        }
    }
}

/// Cached positions widened to `f32` at a time (64 rows of 192: 48 KB).
const ROWS_AT_ONCE: usize = 64;

/// The threads' attention parts (`[max; heads] [sum; heads] [heads · d]`
/// each, one after another) combined into the attention output `[heads · d]`.
fn combine(parts: &[f32], heads: usize, d: usize) -> Vec<f32> {
    let width = heads * (2 + d);
    let mut out = vec![0f32; heads * d];
    for head in 0..heads {
        let max = parts.chunks_exact(width).map(|p| p[head]).fold(f32::NEG_INFINITY, f32::max);
        let mut total = 0.0;
        let out = &mut out[head * d..][..d];
        for p in parts.chunks_exact(width) {
            if p[heads + head] == 0.0 {
                continue;
            }
            let weight = (p[head] - max).exp();
            total += weight * p[heads + head];
            out.iter_mut().zip(&p[2 * heads + head * d..][..d]).for_each(|(o, a)| *o += weight * a);
        }
        out.iter_mut().for_each(|o| *o /= total);
    }
    out
}

/// A product's output rows in chunks the threads take as they come (a
/// thread on a busier core takes fewer), each written once into its own
/// slot and read whole, in row order, after the barrier that follows.
struct Rows {
    rows: usize,
    chunk: usize,
    slots: Vec<Mutex<Vec<f32>>>,
    next: AtomicUsize,
}

impl Rows {
    /// Chunks per thread: enough that the last ones even out the threads,
    /// few enough that each is a long run of rows for the prefetchers (16 per
    /// thread decoded ~10% slower than 4 in alternating runs here).
    const CHUNKS_PER_THREAD: usize = 4;

    fn new(rows: usize, threads: usize) -> Self {
        let chunk = rows.div_ceil(threads * Self::CHUNKS_PER_THREAD).max(1);
        let slots = (0..rows.div_ceil(chunk)).map(|_| Mutex::new(Vec::new())).collect();
        Self { rows, chunk, slots, next: AtomicUsize::new(0) }
    }

    /// Takes chunks until none is left, computing each with `compute(rows, out)`.
    fn take(&self, mut compute: impl FnMut(Range<usize>, &mut Vec<f32>)) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = self.slots.get(i) else { return };
            let range = i * self.chunk..((i + 1) * self.chunk).min(self.rows);
            let mut out = slot.lock().unwrap_or_else(PoisonError::into_inner);
            out.resize(range.len(), 0.0);
            compute(range, &mut out);
        }
    }

    /// Every row, in order.
    fn gather(&self, into: &mut Vec<f32>) {
        into.clear();
        for slot in &self.slots {
            into.extend_from_slice(&slot.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    /// Makes the chunks available again (once every thread has stopped taking them).
    fn reset(&self) {
        self.next.store(0, Ordering::Relaxed);
    }
}

/// Values each thread publishes for the others: one slot per thread, read
/// whole (in thread order) after the barrier that follows the writes. A
/// slot is written again only several barriers after its last read.
struct Exchange(Vec<Mutex<Vec<f32>>>);

impl Exchange {
    fn new(threads: usize) -> Self {
        Self((0..threads).map(|_| Mutex::new(Vec::new())).collect())
    }

    fn publish(&self, t: usize, values: &[f32]) {
        let mut slot = self.0[t].lock().unwrap_or_else(PoisonError::into_inner);
        slot.clear();
        slot.extend_from_slice(values);
    }

    fn gather(&self, into: &mut Vec<f32>) {
        into.clear();
        for slot in &self.0 {
            into.extend_from_slice(&slot.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }
}

/// A barrier the threads spin at (a step's phases are tens of microseconds:
/// sleeping and waking would cost more), yielding the core after
/// [`SPINS`] turns; a thread that panicked releases the others, who panic too.
struct Barrier {
    threads: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    aborted: AtomicBool,
}

impl Barrier {
    fn new(threads: usize) -> Self {
        Self { threads, arrived: AtomicUsize::new(0), generation: AtomicUsize::new(0), aborted: AtomicBool::new(false) }
    }

    fn wait(&self) {
        if self.threads == 1 {
            return;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            // The next phase's arrivals begin after they see the new generation.
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0;
        while self.generation.load(Ordering::Acquire) == generation {
            assert!(!self.aborted.load(Ordering::Relaxed), "another decoding thread panicked");
            if spins < SPINS {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Marks the barrier aborted when its thread unwinds, so that no other waits forever.
struct AbortOnPanic<'a>(&'a Barrier);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.aborted.store(true, Ordering::Relaxed);
        }
    }
}
