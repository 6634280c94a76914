//! Retrieval on a question set: each setting ranks the set's documents for
//! every query (by the chunks it finds, each document at the rank of its
//! best chunk), and is scored against the judges' relevant documents.
//! Besides the store's modes, whole-document vectors (each document
//! embedded whole, truncated as the encoder truncates) are the baseline
//! chunked retrieval must beat.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use twinflow_dataflow::Embedder;
use twinflow_schemas::Hash128;
use twinflow_schemas::api::{SearchFilter, SearchMode};
use twinflow_sinks::Store;

use super::beir::BeirSet;
use super::measures::{Estimate, estimate, ndcg_at, paired_difference, recall_at, reciprocal_rank_at};
use crate::training::Error;

/// Chunks each search returns (documents are ranked from them).
const DEPTH: usize = 100;
/// The cut-off of every measure.
const K: usize = 10;
/// Seed of the bootstrap intervals.
const SEED: u64 = 21;
/// The name of the whole-document baseline.
pub const WHOLE_DOCUMENTS: &str = "whole-documents";
/// The same baseline without the documents' titles (what the title adds).
pub const WHOLE_DOCUMENTS_UNTITLED: &str = "whole-documents, no title";

/// One setting's scores on a set of queries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettingReport {
    pub name: String,
    /// The search mode (`None` for whole-document vectors).
    pub mode: Option<SearchMode>,
    pub ndcg_at_10: Estimate,
    pub recall_at_10: Estimate,
    pub mrr_at_10: Estimate,
    /// nDCG@10 per query, in the order of the set's queries.
    #[serde(skip)]
    pub per_query: Vec<f64>,
}

/// The fusion chosen on one half of the queries, scored on the other.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tuned {
    pub dev_queries: usize,
    pub test_queries: usize,
    /// The fusion with the best mean nDCG@10 on the dev half.
    pub best: SettingReport,
    /// Every setting on the dev half (to choose across several sets).
    pub dev: Vec<SettingReport>,
    /// Every setting on the test half.
    pub test: Vec<SettingReport>,
    /// nDCG@10 of `best` minus that of each single mode and of the
    /// whole-document baseline on the test half (paired, 95% interval).
    pub gains: Vec<(String, Estimate)>,
}

/// What [`evaluate_retrieval`] measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    pub set: String,
    pub documents: usize,
    pub queries: usize,
    /// The committed epoch searched.
    pub epoch: u64,
    pub embedder: String,
    /// Every setting on every query.
    pub settings: Vec<SettingReport>,
    /// With more than one hybrid setting: the fusion chosen on a dev half.
    pub tuned: Option<Tuned>,
}

/// Hybrid fusions worth trying: BM25's and the documents' leads' weights
/// against the vector ranking's (1), and the damping of reciprocal-rank fusion.
pub fn fusion_grid() -> Vec<(String, SearchMode)> {
    let mut grid = Vec::new();
    for lead_weight in [0.0f32, 0.5, 1.0] {
        for bm25_weight in [0.1f32, 0.2, 0.3, 0.5, 0.7, 1.0] {
            for rrf_k in [2.0f32, 10.0, 30.0, 60.0] {
                let mode = SearchMode::Hybrid { vector_weight: 1.0, bm25_weight, lead_weight, rrf_k };
                grid.push((format!("hybrid(bm25 {bm25_weight}, leads {lead_weight}, k {rrf_k})"), mode));
            }
        }
    }
    grid
}

/// Scores `settings` (and, with `whole_documents`, the whole-document
/// baseline) on `set`, whose corpus `store` holds under the corpus ids as
/// `doc_id`s. With two or more hybrid settings, also chooses the best on a
/// dev half of the queries (split by query id) and scores it on the rest.
pub fn evaluate_retrieval(
    store: &Store,
    embedder: &dyn Embedder,
    set: &BeirSet,
    settings: &[(String, SearchMode)],
    whole_documents: bool,
) -> Result<RetrievalReport, Error> {
    let texts: Vec<&str> = set.queries.iter().map(|(_, text)| text.as_str()).collect();
    let vectors = embed_all(embedder, &texts)?;
    let judged: Vec<_> = set.queries.iter().map(|(id, _)| &set.qrels[id]).collect();
    let mut epoch = 0;
    let mut reports = Vec::new();
    for (name, mode) in settings {
        let mut rankings = Vec::with_capacity(texts.len());
        for (text, vector) in texts.iter().zip(&vectors) {
            let (at, hits) = store.search_mode(text, vector, DEPTH, &SearchFilter::default(), *mode, false)?;
            epoch = at;
            let mut seen = HashSet::new();
            let docs: Vec<String> = hits
                .into_iter()
                .flat_map(|hit| hit.sources.into_iter().map(|s| s.doc_id))
                .filter(|doc| seen.insert(doc.clone()))
                .collect();
            rankings.push(docs);
        }
        reports.push(score(name, Some(*mode), &rankings, &judged));
    }
    if whole_documents {
        for (name, titled) in [(WHOLE_DOCUMENTS, true), (WHOLE_DOCUMENTS_UNTITLED, false)] {
            let rankings = rank_whole_documents(embedder, set, &vectors, titled)?;
            reports.push(score(name, None, &rankings, &judged));
        }
    }
    let hybrids = reports.iter().filter(|r| matches!(r.mode, Some(SearchMode::Hybrid { .. }))).count();
    let tuned = (hybrids >= 2).then(|| tune(set, &reports));
    Ok(RetrievalReport {
        set: set.name.clone(),
        documents: set.corpus.len(),
        queries: set.queries.len(),
        epoch,
        embedder: embedder.model_id().to_owned(),
        settings: reports,
        tuned,
    })
}

fn embed_all(embedder: &dyn Embedder, texts: &[&str]) -> Result<Vec<Vec<f32>>, Error> {
    let mut out = Vec::with_capacity(texts.len());
    for batch in texts.chunks(embedder.batch_size().max(1)) {
        let vectors = embedder.embed_batch(batch).map_err(|e| Error::Config(format!("embedding failed: {e}")))?;
        out.extend(vectors.into_iter().map(normalised));
    }
    Ok(out)
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Every document embedded whole (with `titled`: `title`, a blank line,
/// `text`), ranked by cosine per query.
fn rank_whole_documents(
    embedder: &dyn Embedder,
    set: &BeirSet,
    queries: &[Vec<f32>],
    titled: bool,
) -> Result<Vec<Vec<String>>, Error> {
    let texts: Vec<String> =
        set.corpus.iter().map(|d| if titled { format!("{}\n\n{}", d.title, d.text) } else { d.text.clone() }).collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let docs = embed_all(embedder, &refs)?;
    Ok(queries
        .iter()
        .map(|q| {
            let mut scored: Vec<(f32, usize)> =
                docs.iter().enumerate().map(|(i, d)| (d.iter().zip(q).map(|(a, b)| a * b).sum(), i)).collect();
            scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            scored.into_iter().take(DEPTH).map(|(_, i)| set.corpus[i].id.clone()).collect()
        })
        .collect())
}

fn score(
    name: &str,
    mode: Option<SearchMode>,
    rankings: &[Vec<String>],
    judged: &[&std::collections::BTreeMap<String, u32>],
) -> SettingReport {
    let mut ndcg = Vec::new();
    let mut recall = Vec::new();
    let mut rr = Vec::new();
    for (ranking, relevant) in rankings.iter().zip(judged) {
        let ranked: Vec<&str> = ranking.iter().map(String::as_str).collect();
        ndcg.push(ndcg_at(&ranked, relevant, K));
        recall.push(recall_at(&ranked, relevant, K));
        rr.push(reciprocal_rank_at(&ranked, relevant, K));
    }
    SettingReport {
        name: name.to_owned(),
        mode,
        ndcg_at_10: estimate(&ndcg, SEED),
        recall_at_10: estimate(&recall, SEED),
        mrr_at_10: estimate(&rr, SEED),
        per_query: ndcg,
    }
}

/// The same report over the queries at `keep` only (nDCG from the per-query values).
fn subset(report: &SettingReport, keep: &[usize]) -> SettingReport {
    let values: Vec<f64> = keep.iter().map(|i| report.per_query[*i]).collect();
    SettingReport { ndcg_at_10: estimate(&values, SEED), per_query: values, ..report.clone() }
}

/// The best hybrid on the dev half (even query-id hashes), scored with the rest on the test half.
fn tune(set: &BeirSet, reports: &[SettingReport]) -> Tuned {
    let (mut dev, mut test) = (Vec::new(), Vec::new());
    for (i, (id, _)) in set.queries.iter().enumerate() {
        if Hash128::of(id.as_bytes()).0 % 2 == 0 { dev.push(i) } else { test.push(i) }
    }
    // Each setting on each half once (a subset's interval is a bootstrap: not redone per comparison).
    let on_dev: Vec<SettingReport> = reports.iter().map(|r| subset(r, &dev)).collect();
    let on_test: Vec<SettingReport> = reports.iter().map(|r| subset(r, &test)).collect();
    let best = (0..reports.len())
        .filter(|i| matches!(reports[*i].mode, Some(SearchMode::Hybrid { .. })))
        .max_by(|a, b| on_dev[*a].ndcg_at_10.mean.total_cmp(&on_dev[*b].ndcg_at_10.mean))
        .expect("two hybrid settings");
    let gains = on_test
        .iter()
        .filter(|r| !matches!(r.mode, Some(SearchMode::Hybrid { .. })))
        .map(|r| (r.name.clone(), paired_difference(&on_test[best].per_query, &r.per_query, SEED)))
        .collect();
    Tuned {
        dev_queries: dev.len(),
        test_queries: test.len(),
        best: on_dev[best].clone(),
        dev: on_dev,
        test: on_test,
        gains,
    }
}
