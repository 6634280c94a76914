//! How fast are the decoding kernels? Bytes of weights per second through
//! the integer dot products of one thread, on the same rows in GGUF's block
//! layout and repacked (`twinflow_models::gguf::packed`): Q4_1 rows of 576
//! and 1,536 values (SmolLM2's projections) with one pass of 8-bit
//! activations, Q8_0 rows of 576 (its output projection) with two.
//!
//! Run: `cargo bench -p twinflow-benches --bench kernels`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use twinflow_models::gguf::dot::{Q8Row, kernel, packed_kernel};
use twinflow_models::gguf::{GgmlType, packed};
use twinflow_schemas::rng::SeededRng;

/// Rows per product: 1.5–3 MB of weights, as one layer's projections.
const ROWS: usize = 4096;

fn kernels(c: &mut Criterion) {
    let mut rng = SeededRng::new(11);
    let mut group = c.benchmark_group("dot_rows");
    group.sample_size(20);
    for (ty, cols, passes) in [(GgmlType::Q4_1, 576, 1), (GgmlType::Q4_1, 1536, 1), (GgmlType::Q8_0, 576, 2)] {
        let (_, block_bytes) = ty.block();
        let mut gguf: Vec<u8> = (0..ROWS * cols / 32 * block_bytes).map(|_| rng.below(256) as u8).collect();
        // Scales (and minimums) of 1.0 as f16, so no block is NaN.
        let halves = if ty == GgmlType::Q4_1 { 2 } else { 1 };
        for block in gguf.chunks_exact_mut(block_bytes) {
            for h in 0..halves {
                block[2 * h..2 * h + 2].copy_from_slice(&0x3c00u16.to_le_bytes());
            }
        }
        let repacked = packed::pack(ty, &gguf, ROWS, cols);
        let x: Vec<f32> = (0..cols).map(|_| rng.unit() as f32 - 0.5).collect();
        let q = Q8Row::quantize_residual(&x, passes);
        let (rows_kernel, packed_kernel) = (kernel(ty).expect("a kernel"), packed_kernel(ty).expect("a kernel"));
        let name = format!("{}x{cols}_{passes}pass", ty.name());
        group.throughput(Throughput::Bytes(gguf.len() as u64));
        let row = gguf.len() / ROWS;
        group.bench_function(BenchmarkId::new("gguf", &name), |b| {
            b.iter(|| gguf.chunks_exact(row).map(|w| q.iter().map(|x| rows_kernel(w, x)).sum::<f32>()).sum::<f32>())
        });
        let row = repacked.len() / ROWS;
        group.bench_function(BenchmarkId::new("packed", &name), |b| {
            b.iter(|| repacked.chunks_exact(row).map(|w| packed_kernel(w, &q)).sum::<f32>())
        });
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
