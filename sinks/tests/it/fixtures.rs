//! Rows, the scenario and the oracle shared by the tests.

use std::collections::BTreeMap;

use arrow::array::{Array, RecordBatch};
use twinflow_schemas::{
    ChunkRow, ContentFormat, DocumentKind, DocumentRow, EmbeddingRow, EpochUpdates, Hash128, InstructRow, Split,
    TableName, Vector,
};
use twinflow_sinks::{EpochCommit, Store};

/// Embedding dimension of every test store.
pub(crate) const DIM: usize = 4;

pub(crate) fn doc(id: &str, title: &str, version: u64) -> DocumentRow {
    let content = format!("{title} content");
    DocumentRow {
        doc_id: id.into(),
        kind: DocumentKind::Article,
        author: "ada".into(),
        title: title.into(),
        url: format!("https://example.com/{id}"),
        source: "test".into(),
        format: ContentFormat::Markdown,
        content_hash: Hash128::of(content.as_bytes()),
        content,
        fetched_at: 1_700_000_000_000 + version as i64,
        version,
    }
}

pub(crate) fn chunk(doc_id: &str, ordinal: u32, text: &str) -> ChunkRow {
    ChunkRow {
        chunk_id: Hash128::of(text.as_bytes()),
        doc_id: doc_id.into(),
        ordinal,
        text: text.into(),
        char_start: ordinal * 100,
        char_end: ordinal * 100 + text.chars().count() as u32,
        token_estimate: text.split_whitespace().count() as u32,
        pages: None,
    }
}

/// The fixed, L2-normalised test vector of each chunk text.
pub(crate) fn vector_of(text: &str) -> Vec<f32> {
    match text {
        "alpha one" => vec![1.0, 0.0, 0.0, 0.0],
        "alpha two" => vec![0.8, 0.6, 0.0, 0.0],
        "shared text" => vec![0.0, 1.0, 0.0, 0.0],
        "beta" => vec![0.0, 0.0, 1.0, 0.0],
        "gamma" => vec![0.0, 0.0, 0.6, 0.8],
        "delta" => vec![0.5, 0.5, 0.5, 0.5],
        other => panic!("no test vector for {other:?}"),
    }
}

pub(crate) fn emb(text: &str) -> EmbeddingRow {
    EmbeddingRow {
        chunk_id: Hash128::of(text.as_bytes()),
        model_id: "test-model".into(),
        vector: Vector(vector_of(text)),
    }
}

pub(crate) fn sample(doc_id: &str, text: &str) -> InstructRow {
    InstructRow {
        sample_id: Hash128::of_parts(&[text.as_bytes(), doc_id.as_bytes()]),
        instruction: format!("Write about {text}"),
        output: text.into(),
        doc_id: doc_id.into(),
        chunk_ids: vec![Hash128::of(text.as_bytes())],
        generator: "offline-v1".into(),
        split: Split::Train,
    }
}

/// One epoch's parts: `(epoch, [(worker, updates)])`.
pub(crate) type Epoch = (u64, Vec<(usize, EpochUpdates)>);

/// Five epochs over two workers: inserts (1), an update of `a` and an insert
/// of `c` (2), a delete of `b` (3), nothing (4), an insert of `d` sharing a
/// chunk text with `c` and a metadata-only update of `c` (5).
pub(crate) fn scenario() -> Vec<Epoch> {
    let e1 = vec![
        (
            0,
            EpochUpdates {
                documents: vec![(doc("a", "A one", 1), 1)],
                chunks: vec![(chunk("a", 0, "alpha one"), 1), (chunk("a", 1, "shared text"), 1)],
                embeddings: vec![(emb("alpha one"), 1), (emb("shared text"), 1)],
                instruct: vec![(sample("a", "alpha one"), 1)],
                drift: vec![],
            },
        ),
        (
            1,
            EpochUpdates {
                documents: vec![(doc("b", "B", 1), 1)],
                chunks: vec![(chunk("b", 0, "beta"), 1), (chunk("b", 1, "shared text"), 1)],
                embeddings: vec![(emb("beta"), 1)],
                instruct: vec![],
                drift: vec![],
            },
        ),
    ];
    let e2 = vec![
        (
            0,
            EpochUpdates {
                documents: vec![(doc("a", "A one", 1), -1), (doc("a", "A two", 2), 1)],
                chunks: vec![(chunk("a", 0, "alpha one"), -1), (chunk("a", 0, "alpha two"), 1)],
                embeddings: vec![(emb("alpha one"), -1), (emb("alpha two"), 1)],
                instruct: vec![(sample("a", "alpha one"), -1), (sample("a", "alpha two"), 1)],
                drift: vec![],
            },
        ),
        (
            1,
            EpochUpdates {
                documents: vec![(doc("c", "C one", 2), 1)],
                chunks: vec![(chunk("c", 0, "gamma"), 1)],
                embeddings: vec![(emb("gamma"), 1)],
                instruct: vec![],
                drift: vec![],
            },
        ),
    ];
    let e3 = vec![(
        1,
        EpochUpdates {
            documents: vec![(doc("b", "B", 1), -1)],
            chunks: vec![(chunk("b", 0, "beta"), -1), (chunk("b", 1, "shared text"), -1)],
            embeddings: vec![(emb("beta"), -1)],
            instruct: vec![],
            drift: vec![],
        },
    )];
    let e4 = vec![(0, EpochUpdates::default()), (1, EpochUpdates::default())];
    let e5 = vec![
        (
            0,
            EpochUpdates {
                documents: vec![(doc("d", "D", 5), 1)],
                chunks: vec![(chunk("d", 0, "delta"), 1), (chunk("d", 1, "gamma"), 1)],
                embeddings: vec![(emb("delta"), 1)],
                instruct: vec![],
                drift: vec![],
            },
        ),
        (
            1,
            EpochUpdates {
                documents: vec![(doc("c", "C one", 2), -1), (doc("c", "C two", 5), 1)],
                ..EpochUpdates::default()
            },
        ),
    ];
    vec![(1, e1), (2, e2), (3, e3), (4, e4), (5, e5)]
}

/// Commits `epochs` to `store` and to `oracle`.
pub(crate) fn commit_all(store: &Store, oracle: &mut Oracle, epochs: &[Epoch]) {
    for (epoch, parts) in epochs {
        store.commit(EpochCommit::new(*epoch, parts.clone())).unwrap();
        oracle.apply(*epoch, parts);
    }
}

/// An independent consolidation of the same updates.
#[derive(Debug, Default, Clone)]
pub(crate) struct Oracle {
    pub(crate) epoch: u64,
    pub(crate) documents: BTreeMap<DocumentRow, i64>,
    pub(crate) chunks: BTreeMap<ChunkRow, i64>,
    pub(crate) embeddings: BTreeMap<EmbeddingRow, i64>,
    pub(crate) instruct: BTreeMap<InstructRow, i64>,
}

fn add<R: Ord + Clone>(map: &mut BTreeMap<R, i64>, updates: &[(R, i64)]) {
    for (row, diff) in updates {
        *map.entry(row.clone()).or_default() += diff;
    }
    map.retain(|_, n| *n != 0);
}

fn live<R: Clone>(map: &BTreeMap<R, i64>) -> Vec<R> {
    map.iter().flat_map(|(r, n)| std::iter::repeat_n(r.clone(), (*n).max(0) as usize)).collect()
}

impl Oracle {
    pub(crate) fn apply(&mut self, epoch: u64, parts: &[(usize, EpochUpdates)]) {
        for (_, u) in parts {
            add(&mut self.documents, &u.documents);
            add(&mut self.chunks, &u.chunks);
            add(&mut self.embeddings, &u.embeddings);
            add(&mut self.instruct, &u.instruct);
        }
        self.epoch = epoch;
    }

    pub(crate) fn counts(&self) -> BTreeMap<String, u64> {
        let sum = |n: i64| n.max(0) as u64;
        BTreeMap::from([
            (TableName::Documents.to_string(), sum(self.documents.values().sum())),
            (TableName::Chunks.to_string(), sum(self.chunks.values().sum())),
            (TableName::Embeddings.to_string(), sum(self.embeddings.values().sum())),
            (TableName::Instruct.to_string(), sum(self.instruct.values().sum())),
        ])
    }

    pub(crate) fn documents(&self) -> Vec<DocumentRow> {
        live(&self.documents)
    }

    pub(crate) fn chunks(&self) -> Vec<ChunkRow> {
        live(&self.chunks)
    }

    pub(crate) fn embeddings(&self) -> Vec<EmbeddingRow> {
        live(&self.embeddings)
    }

    /// Brute-force ranking: (chunk_id, score) of live chunks, best first,
    /// ties by chunk_id.
    pub(crate) fn search(&self, query: &[f32], k: usize) -> Vec<(Hash128, f32)> {
        let mut best: BTreeMap<Hash128, f32> = BTreeMap::new();
        for e in self.embeddings() {
            if !self.chunks().iter().any(|c| c.chunk_id == e.chunk_id) {
                continue;
            }
            let score: f32 = e.vector.0.iter().zip(query).map(|(a, b)| a * b).sum();
            let entry = best.entry(e.chunk_id).or_insert(f32::MIN);
            *entry = entry.max(score);
        }
        let mut ranked: Vec<(Hash128, f32)> = best.into_iter().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked
    }
}

/// The answer to `sql` as pretty-printed text, plus its epoch.
pub(crate) async fn query_text(store: &Store, sql: &str) -> (u64, String) {
    let answer = store.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    (answer.epoch, pretty(&answer.batches))
}

pub(crate) fn pretty(batches: &[RecordBatch]) -> String {
    arrow::util::pretty::pretty_format_batches(batches).unwrap().to_string()
}

/// A single `i64`/`u64`-ish scalar answer.
pub(crate) async fn scalar(store: &Store, sql: &str) -> i64 {
    let answer = store.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    let batch = arrow::compute::concat_batches(&answer.schema, &answer.batches).unwrap();
    assert_eq!(batch.num_rows(), 1, "{sql}");
    let col = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Int64).unwrap();
    let col = col.as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
    if col.is_null(0) { 0 } else { col.value(0) }
}

/// Files under `dir`, relative, sorted.
pub(crate) fn files_under(dir: &std::path::Path) -> Vec<String> {
    fn walk(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
