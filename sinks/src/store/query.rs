//! Reading at the committed epoch, each answer under one read lock: live
//! counts and rows, the `drift` and `ingest_errors` tails, vector, BM25 and
//! hybrid search (fused by [`reciprocal_rank`]), facets, similarities for
//! reranking, and read-only SQL.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use twinflow_schemas::api::{SearchFilter, SearchHit, SearchMode};
use twinflow_schemas::{
    ChunkRow, DocumentKind, DocumentRow, DriftRow, EmbeddingRow, Hash128, IngestErrorRow, TableName,
};

use super::Store;
use crate::drift_log::drift_batch;
use crate::error::{Error, Result};
use crate::error_log::error_batch;
use crate::fusion::reciprocal_rank;
use crate::sql::{SqlAnswer, SqlInputs};
use crate::trace_log::trace_batch;

/// A search's answer with the rankings behind it ([`Store::search_ranked`]).
#[derive(Clone, Debug, Default)]
pub struct Ranked {
    /// The committed epoch of the answer.
    pub epoch: u64,
    /// The best `k`, as [`Store::search_mode`] answers them.
    pub hits: Vec<SearchHit>,
    /// How many each ranking was asked for: `k`, or hybrid's candidate depth.
    pub depth: usize,
    /// `(cosine, chunk_id)` best first (empty in `bm25` mode).
    pub by_vector: Vec<(f32, Hash128)>,
    /// `(chunk_id, BM25)` best first (empty in `vector` mode).
    pub by_bm25: Vec<(Hash128, f32)>,
    /// Every chunk of the candidates' documents, sorted, when hybrid ranked
    /// those documents by their leads (`lead_weight` above 0): a change of
    /// any of them can move the answer.
    pub documents_chunks: Vec<Hash128>,
}

impl Store {
    /// Live row counts per table (sum of multiplicities) at the committed epoch.
    pub fn counts(&self) -> (u64, BTreeMap<String, u64>) {
        let state = self.state.read();
        let counts = TableName::ALL.iter().map(|t| (t.as_str().to_owned(), state.live.count(*t))).collect();
        (state.committed, counts)
    }

    /// The current documents, sorted (to restore the dataflow after a restart).
    pub fn current_documents(&self) -> Vec<DocumentRow> {
        self.state.read().live.documents.current().into_iter().cloned().collect()
    }

    /// The current chunks, sorted.
    pub fn current_chunks(&self) -> Vec<ChunkRow> {
        self.state.read().live.chunks.current().into_iter().cloned().collect()
    }

    /// The current instruct samples and chunks, sorted, at one committed epoch.
    pub fn current_instruct_and_chunks(&self) -> (u64, Vec<twinflow_schemas::InstructRow>, Vec<ChunkRow>) {
        let state = self.state.read();
        (
            state.committed,
            state.live.instruct.current().into_iter().cloned().collect(),
            state.live.chunks.current().into_iter().cloned().collect(),
        )
    }

    /// The current embeddings, sorted (to seed the embedding cache).
    pub fn current_embeddings(&self) -> Vec<EmbeddingRow> {
        self.state.read().live.embeddings.current().into_iter().cloned().collect()
    }

    /// The last `n` committed `drift` rows, in epoch order.
    pub fn drift_tail(&self, n: usize) -> Vec<DriftRow> {
        let state = self.state.read();
        state.drift[state.drift.len().saturating_sub(n)..].to_vec()
    }

    /// The committed `drift` rows of epochs after `since` (all with 0), in epoch order.
    pub fn drift_rows(&self, since: u64) -> Vec<DriftRow> {
        let state = self.state.read();
        let start = state.drift.partition_point(|r| r.epoch <= since);
        state.drift[start..].to_vec()
    }

    /// The last `n` committed `ingest_errors` rows, in epoch order.
    pub fn ingest_errors_tail(&self, n: usize) -> Vec<IngestErrorRow> {
        let state = self.state.read();
        state.ingest_errors[state.ingest_errors.len().saturating_sub(n)..].to_vec()
    }

    /// Exact cosine top-`k` over the live embeddings (dot product of
    /// L2-normalised vectors), with every live occurrence of each chunk and
    /// its document's metadata, and the epoch the hits are as of. Ties are
    /// broken by `chunk_id`; `k = 0` gives no hits.
    pub fn search(&self, query: &[f32], k: usize) -> (u64, Vec<SearchHit>) {
        self.search_filtered(query, k, &SearchFilter::default())
    }

    /// Search by `mode`: cosine of `vector` (the embedded query), BM25 of
    /// the words of `text`, or both fused by weighted reciprocal rank over
    /// each one's best `max(4k, 50)` (and, with a `lead_weight`, the
    /// candidates' documents ranked by their leads' cosine). Filters apply
    /// inside both searches. The vector side uses the HNSW index when it is on and the candidates
    /// are many; `exact` forces the exact scan. Returns the committed epoch
    /// both indexes are at.
    pub fn search_mode(
        &self,
        text: &str,
        vector: &[f32],
        k: usize,
        filter: &SearchFilter,
        mode: SearchMode,
        exact: bool,
    ) -> Result<(u64, Vec<SearchHit>)> {
        let ranked = self.search_ranked(text, vector, k, filter, mode, exact, false)?;
        Ok((ranked.epoch, ranked.hits))
    }

    /// [`search_mode`](Self::search_mode) with the rankings it fused: what
    /// a standing question needs to tell which later changes can move it,
    /// with every chunk of the documents whose leads it consulted when
    /// `with_documents_chunks` (a plain search has no use for them).
    #[allow(clippy::too_many_arguments)]
    pub fn search_ranked(
        &self,
        text: &str,
        vector: &[f32],
        k: usize,
        filter: &SearchFilter,
        mode: SearchMode,
        exact: bool,
        with_documents_chunks: bool,
    ) -> Result<Ranked> {
        let state = self.state.read();
        let live = &state.live;
        let allowed = crate::search::allowed_docs(live, filter);
        let passes = |doc_id: &str| allowed.as_ref().is_none_or(|set| set.contains(doc_id));
        let allowed_chunks = allowed.as_ref().map(|docs| crate::search::allowed_chunks(live, docs));
        let bm25 = |n: usize| {
            let keys = allowed_chunks.as_ref().map(|ids| Arc::new(ids.iter().map(|id| id.0.to_be_bytes()).collect()));
            state.text.search(text, n, keys)
        };
        let query = state.query(vector);
        let nearest = |n: usize| {
            crate::search::planned_top_k(
                live,
                state.vectors(),
                &state.vectors,
                &query,
                n,
                allowed_chunks.as_ref(),
                exact,
            )
        };
        let (depth, by_vector, by_bm25) = match mode {
            SearchMode::Vector => (k, nearest(k)?, Vec::new()),
            SearchMode::Bm25 => (k, Vec::new(), bm25(k)?),
            SearchMode::Hybrid { .. } => {
                let n = (4 * k).max(50);
                (n, nearest(n)?, bm25(n)?)
            }
        };
        let mut documents_chunks = Vec::new();
        let hits = match mode {
            SearchMode::Vector => by_vector
                .iter()
                .map(|&(score, id)| {
                    let mut hit = crate::search::hit(live, id, score, &passes);
                    hit.vector_score = Some(score);
                    hit
                })
                .collect(),
            SearchMode::Bm25 => by_bm25
                .iter()
                .map(|&(id, score)| {
                    let mut hit = crate::search::hit(live, id, score, &passes);
                    hit.bm25_score = Some(score);
                    hit
                })
                .collect(),
            SearchMode::Hybrid { vector_weight, bm25_weight, lead_weight, rrf_k } => {
                let vector_ids: Vec<Hash128> = by_vector.iter().map(|(_, id)| *id).collect();
                let bm25_ids: Vec<Hash128> = by_bm25.iter().map(|(id, _)| *id).collect();
                let mut fused =
                    reciprocal_rank(&[(vector_weight, &vector_ids[..]), (bm25_weight, &bm25_ids[..])], rrf_k);
                if lead_weight > 0.0 {
                    let candidates: Vec<Hash128> = fused.iter().map(|(id, _)| *id).collect();
                    let (added, consulted) = crate::search::lead_scores(
                        live,
                        state.vectors(),
                        &query,
                        &candidates,
                        &passes,
                        (lead_weight, rrf_k),
                        with_documents_chunks,
                    );
                    for (id, score) in &mut fused {
                        *score += added.get(id).copied().unwrap_or(0.0);
                    }
                    fused.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                    documents_chunks = consulted;
                }
                fused.truncate(k);
                // Each part's own score goes with the hit, beside the fused one.
                let vector_scores: HashMap<Hash128, f32> = by_vector.iter().map(|&(score, id)| (id, score)).collect();
                let bm25_scores: HashMap<Hash128, f32> = by_bm25.iter().copied().collect();
                fused
                    .into_iter()
                    .map(|(id, score)| {
                        let mut hit = crate::search::hit(live, id, score, &passes);
                        hit.vector_score = vector_scores.get(&id).copied();
                        hit.bm25_score = bm25_scores.get(&id).copied();
                        hit
                    })
                    .collect()
            }
        };
        Ok(Ranked { epoch: state.committed, hits, depth, by_vector, by_bm25, documents_chunks })
    }

    /// [`search`](Self::search) over the chunks of the documents that pass
    /// `filter`, applied during the scan (so `k` is filled when enough match).
    pub fn search_filtered(&self, query: &[f32], k: usize, filter: &SearchFilter) -> (u64, Vec<SearchHit>) {
        let state = self.state.read();
        let query = state.query(query);
        (state.committed, crate::search::top_k(&state.live, state.vectors(), &query, k, filter))
    }

    /// Cosine of `query` with each chunk's best live vector of the same
    /// length (`None` for a chunk without one); for reranking.
    pub fn similarities(&self, query: &[f32], chunk_ids: &[Hash128]) -> Vec<Option<f32>> {
        let state = self.state.read();
        let query = state.query(query);
        chunk_ids.iter().map(|id| crate::search::best_similarity(&state.live, state.vectors(), id, &query)).collect()
    }

    /// Cosine of `query` with the lead of each document of `doc_ids` (its
    /// first chunk: what the document is about, as a whole-document vector
    /// would say); `None` for a document without one. For reranking.
    pub fn lead_similarities(&self, query: &[f32], doc_ids: &[&str]) -> Vec<Option<f32>> {
        let state = self.state.read();
        let query = state.query(query);
        doc_ids
            .iter()
            .map(|doc| {
                let lead = state.live.lead(doc)?;
                crate::search::best_similarity(&state.live, state.vectors(), &lead, &query)
            })
            .collect()
    }

    /// The authors and kinds of the current documents, each with its number of documents.
    pub fn facets(&self) -> (Vec<(String, usize)>, Vec<(DocumentKind, usize)>) {
        let state = self.state.read();
        let mut authors: BTreeMap<&str, usize> = BTreeMap::new();
        let mut kinds: BTreeMap<DocumentKind, usize> = BTreeMap::new();
        for (_, rows) in state.live.documents.groups() {
            if let Some((doc, _)) = rows.iter().find(|(_, n)| *n > 0) {
                *authors.entry(doc.author.as_str()).or_default() += 1;
                *kinds.entry(doc.kind).or_default() += 1;
            }
        }
        (authors.into_iter().map(|(a, n)| (a.to_owned(), n)).collect(), kinds.into_iter().collect())
    }

    /// Runs one read-only SQL statement over the committed epoch: the live
    /// tables `documents`, `chunks`, `embeddings`, `instruct` and their
    /// committed change logs `<table>_changes` (with `_epoch`, `_diff`).
    /// Statements that would change anything are [`Error::SqlNotReadOnly`];
    /// others that fail are [`Error::Sql`].
    pub async fn sql(&self, sql: &str) -> Result<SqlAnswer> {
        let inputs = self.sql_inputs()?;
        let runtime = self.sql_runtime.read().clone();
        crate::sql::run(inputs, sql, &runtime, None).await
    }

    /// [`Self::sql`] with the search functions (`knn`, `bm25`, `hybrid`,
    /// `embed`) answering at the statement's epoch: a statement whose
    /// search met a newer epoch than its tables is run again on that epoch.
    pub async fn sql_with(self: &Arc<Self>, sql: &str, encoder: Arc<dyn crate::QueryEncoder>) -> Result<SqlAnswer> {
        const TRIES: usize = 5;
        let runtime = self.sql_runtime.read().clone();
        for _ in 0..TRIES {
            let inputs = self.sql_inputs()?;
            let functions = crate::sql_search::SearchFunctions {
                store: self.clone(),
                encoder: encoder.clone(),
                epoch: inputs.epoch,
                moved: Default::default(),
            };
            let answer = crate::sql::run(inputs, sql, &runtime, Some(&functions)).await;
            if !functions.moved.load(std::sync::atomic::Ordering::SeqCst) {
                return answer;
            }
        }
        Err(Error::Sql(format!(
            "commits moved the epoch under the statement's searches {TRIES} times in a row; run it again"
        )))
    }

    /// Runs every later statement within `limits` (one memory pool for all of them).
    pub fn set_sql_limits(&self, limits: crate::SqlLimits) -> Result<()> {
        *self.sql_runtime.write() = Arc::new(crate::sql::SqlRuntime::new(limits)?);
        Ok(())
    }

    /// Everything one query reads, taken under one read lock.
    fn sql_inputs(&self) -> Result<SqlInputs> {
        let (oldest, _) = self.epochs_available();
        let state = self.state.read();
        let mut cache = self.batches.lock();
        let mut current = Vec::new();
        let mut changes = Vec::new();
        for table in TableName::ALL {
            let changed_at = state.live.changed_at(table);
            let batch = match cache.get(&table) {
                Some((at, batch)) if *at == changed_at => batch.clone(),
                _ => {
                    let batch = state.live.current_batch(table, self.dim)?;
                    cache.insert(table, (changed_at, batch.clone()));
                    batch
                }
            };
            current.push((table, batch));
            let files = state.manifest.change_files(table, state.committed);
            changes.push((table, files.iter().map(|f| self.dir.join(f)).collect()));
        }
        let drift = drift_batch(&state.drift)?;
        let ingest_errors = error_batch(&state.ingest_errors)?;
        let traces = trace_batch(&state.traces)?;
        let snapshots = TableName::ALL
            .iter()
            .map(|table| {
                let files = state.manifest.snapshots.iter().filter_map(|s| s.files.get(table.as_str())).flatten();
                (*table, files.map(|f| self.dir.join(f)).collect())
            })
            .collect();
        let datasets = crate::datasets::dataset_files(&self.dir);
        let evaluations = crate::evaluations::evaluation_files(&self.dir);
        Ok(SqlInputs {
            epoch: state.committed,
            oldest,
            dim: self.dim,
            current,
            changes,
            drift,
            ingest_errors,
            traces,
            snapshots,
            datasets,
            evaluations,
        })
    }
}
