//! How fast are documents cleaned and chunked? Throughput (bytes/s) of
//! `clean` + `chunk` on real State of the Union speeches with the default
//! article spec.
//!
//! Run: `cargo bench -p twinflow-benches --bench chunking`
//! (needs the demo corpus: `twinflow up --demo` fetches it once).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use twinflow_dataflow::text;
use twinflow_schemas::config::ChunkingConfig;
use twinflow_schemas::{DocumentChange, DocumentKind};

fn chunking(c: &mut Criterion) {
    let dir =
        twinflow_connectors::demo::fetch_sotu(&twinflow_connectors::demo::default_cache_dir()).expect("demo corpus");
    let docs: Vec<_> = twinflow_connectors::demo::sotu_changes(&dir, Some(20))
        .expect("speeches")
        .into_iter()
        .filter_map(|c| match c {
            DocumentChange::Upsert(doc) => Some(doc),
            DocumentChange::Delete { .. } => None,
        })
        .collect();
    let bytes: usize = docs.iter().map(|d| d.content.len()).sum();
    let spec = ChunkingConfig::default().article;
    let mut group = c.benchmark_group("clean_and_chunk");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.sample_size(10);
    group.bench_function("sotu_20_speeches", |b| {
        b.iter(|| docs.iter().map(|d| text::chunk(&text::clean(d), DocumentKind::Article, &spec).len()).sum::<usize>())
    });
    group.finish();
}

criterion_group!(benches, chunking);
criterion_main!(benches);
