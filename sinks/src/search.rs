//! Vector search over the live state, with provenance.
//!
//! Vectors are L2-normalised, so cosine similarity is the dot product. A
//! search is planned: the HNSW index (`vector_index/`) when it is on and
//! the candidates are many, else an exact scan of the candidates — every live
//! embedding of the query's length, or only those of the chunks a filter
//! lets through. A chunk with several vectors (several models) counts once,
//! with its best score. Only chunks that still occur in the `chunks` table
//! are returned (the text and the sources come from there). Exact results
//! break ties by `chunk_id`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use twinflow_schemas::api::{ChunkSource, SearchFilter, SearchHit};
use twinflow_schemas::{DocumentKind, EmbeddingRow, Hash128};

use crate::error::Result;
use crate::live::{DocumentLead, LiveState};
use crate::vector_index::ShardedVectors;

/// Where a search reads each row's vector: the stored (base) vector, or its
/// projection by the active adapter.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Vectors<'a> {
    pub(crate) projected: Option<&'a HashMap<Hash128, Vec<f32>>>,
}

impl<'a> Vectors<'a> {
    pub(crate) fn of(&self, row: &'a EmbeddingRow) -> &'a [f32] {
        match self.projected {
            Some(map) => map.get(&row.chunk_id).map_or(&[], Vec::as_slice),
            None => &row.vector.0,
        }
    }
}

/// The doc ids a filter lets through; `None` when it lets everything through.
pub(crate) fn allowed_docs<'a>(live: &'a LiveState, filter: &SearchFilter) -> Option<HashSet<&'a str>> {
    (!filter.is_empty()).then(|| {
        live.documents.current().into_iter().filter(|d| filter.matches(d)).map(|d| d.doc_id.as_str()).collect()
    })
}

/// The chunk ids with an occurrence in an allowed document.
pub(crate) fn allowed_chunks(live: &LiveState, docs: &HashSet<&str>) -> HashSet<Hash128> {
    live.chunks
        .groups()
        .filter(|(_, rows)| rows.iter().any(|(c, n)| *n > 0 && docs.contains(c.doc_id.as_str())))
        .map(|(id, _)| *id)
        .collect()
}

/// The `k` best chunks for `query` whose documents pass `filter`, best first.
pub(crate) fn top_k(
    live: &LiveState,
    vectors: Vectors<'_>,
    query: &[f32],
    k: usize,
    filter: &SearchFilter,
) -> Vec<SearchHit> {
    let allowed = allowed_docs(live, filter);
    let passes = |doc_id: &str| allowed.as_ref().is_none_or(|set| set.contains(doc_id));
    scored_top_k(live, vectors, query, k, &passes)
        .into_iter()
        .map(|(score, chunk_id)| {
            let mut h = hit(live, chunk_id, score, &passes);
            h.vector_score = Some(score);
            h
        })
        .collect()
}

/// `(cosine, chunk_id)` of the `k` best chunks for `query`, planned: the
/// HNSW index unless `exact`, or unless the candidates (`allowed`, when a
/// filter applies) are few enough for an exact scan.
pub(crate) fn planned_top_k(
    live: &LiveState,
    vectors: Vectors<'_>,
    index: &ShardedVectors,
    query: &[f32],
    k: usize,
    allowed: Option<&HashSet<Hash128>>,
    exact: bool,
) -> Result<Vec<(f32, Hash128)>> {
    let exact_scan = || match allowed {
        None => scored_top_k(live, vectors, query, k, &|_| true),
        Some(ids) => best_of(ids.iter().map(|id| (id, live.embeddings.group(id))), vectors, query, k, &|_| true, live),
    };
    if exact || index.prefers_exact(allowed.map(HashSet::len)) {
        return Ok(exact_scan());
    }
    let found = match allowed {
        None => index.search(query, k, None),
        Some(ids) => index.search(query, k, Some(&|id: &Hash128| ids.contains(id))),
    };
    let found = match found {
        Ok(found) => found,
        // E.g. more concurrent searches than the graph has contexts for: answer exactly instead.
        Err(e) => {
            tracing::warn!(error = %e, "the vector index could not search; scanning exactly");
            return Ok(exact_scan());
        }
    };
    // A filtered graph search can stop before it has found k allowed chunks: complete it exactly.
    if let Some(ids) = allowed
        && found.len() < k.min(ids.len())
    {
        return Ok(exact_scan());
    }
    // The graph may hold quantised vectors: score with the stored f32 ones; only live chunks.
    let mut scored: Vec<(f32, Hash128)> = found
        .into_iter()
        .filter(|(_, id)| live.chunks.present(id).next().is_some())
        .map(|(approx, id)| (best_similarity(live, vectors, &id, query).unwrap_or(approx), id))
        .collect();
    scored.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    Ok(scored)
}

/// `(cosine, chunk_id)` of the `k` best chunks with an occurrence that `passes`, best first (exact).
pub(crate) fn scored_top_k(
    live: &LiveState,
    vectors: Vectors<'_>,
    query: &[f32],
    k: usize,
    passes: &dyn Fn(&str) -> bool,
) -> Vec<(f32, Hash128)> {
    best_of(live.embeddings.groups(), vectors, query, k, passes, live)
}

/// The exact scan over `candidates` (chunk id, its embedding rows).
fn best_of<'a>(
    candidates: impl Iterator<Item = (&'a Hash128, &'a [(EmbeddingRow, i64)])>,
    vectors: Vectors<'a>,
    query: &[f32],
    k: usize,
    passes: &dyn Fn(&str) -> bool,
    live: &LiveState,
) -> Vec<(f32, Hash128)> {
    if k == 0 || query.is_empty() {
        return Vec::new();
    }
    let mut scored: Vec<(f32, Hash128)> = Vec::new();
    for (chunk_id, rows) in candidates {
        let best = rows
            .iter()
            .map(|(row, n)| (vectors.of(row), n))
            .filter(|(vector, n)| **n > 0 && vector.len() == query.len())
            .map(|(vector, _)| dot(vector, query))
            .max_by(f32::total_cmp);
        if let Some(score) = best
            && live.chunks.present(chunk_id).any(|c| passes(&c.doc_id))
        {
            scored.push((score, *chunk_id));
        }
    }
    let order = |a: &(f32, Hash128), b: &(f32, Hash128)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if scored.len() > k {
        scored.select_nth_unstable_by(k - 1, order);
        scored.truncate(k);
    }
    scored.sort_unstable_by(order);
    scored
}

/// The hit for one chunk: its text and every live occurrence that passes.
pub(crate) fn hit(live: &LiveState, chunk_id: Hash128, score: f32, passes: &dyn Fn(&str) -> bool) -> SearchHit {
    let mut occurrences: Vec<_> = live.chunks.present(&chunk_id).filter(|c| passes(&c.doc_id)).collect();
    occurrences
        .sort_unstable_by(|a, b| (&a.doc_id, a.ordinal, a.char_start).cmp(&(&b.doc_id, b.ordinal, b.char_start)));
    occurrences.dedup_by(|a, b| (&a.doc_id, a.ordinal, a.char_start) == (&b.doc_id, b.ordinal, b.char_start));
    let text = occurrences.first().map(|c| c.text.clone()).unwrap_or_default();
    let sources = occurrences
        .into_iter()
        .map(|chunk| {
            // The current version of the document (the newest if several are live).
            let doc = live.documents.present(&chunk.doc_id).max_by_key(|d| d.version);
            ChunkSource {
                doc_id: chunk.doc_id.clone(),
                ordinal: chunk.ordinal,
                char_start: chunk.char_start,
                char_end: chunk.char_end,
                page_start: chunk.pages.map(|p| p.0),
                page_end: chunk.pages.map(|p| p.1),
                title: doc.map(|d| d.title.clone()).unwrap_or_default(),
                url: doc.map(|d| d.url.clone()).unwrap_or_default(),
                author: doc.map(|d| d.author.clone()).unwrap_or_default(),
                kind: doc.map(|d| d.kind).unwrap_or(DocumentKind::Other),
            }
        })
        .collect();
    SearchHit { chunk_id, score, vector_score: None, bm25_score: None, text, sources }
}

/// What the candidates' documents add to hybrid search. The documents (of
/// the occurrences that pass) are ranked by their leads' cosine to `query`,
/// best first (ties by doc id); a candidate scores `weight × coherence ×
/// agreement / (rrf_k + place)` for its best document, where `place` is the
/// document's (from 1), `agreement` the candidate's cosine with that lead
/// and `coherence` the mean cosine of the document's chunks with it (each 0
/// at worst): a lead speaks for the passages on its subject, and for a
/// document only as far as the document keeps to that subject. Also, when
/// `with_chunks`, every chunk of those documents, so that a standing
/// question can tell when a change may move it.
pub(crate) fn lead_scores(
    live: &LiveState,
    vectors: Vectors<'_>,
    query: &[f32],
    candidates: &[Hash128],
    passes: &dyn Fn(&str) -> bool,
    (weight, rrf_k): (f32, f32),
    with_chunks: bool,
) -> (HashMap<Hash128, f32>, Vec<Hash128>) {
    let mut docs_of: Vec<(Hash128, Vec<&str>)> = Vec::with_capacity(candidates.len());
    // Each candidate document's lead (made once per document and projection,
    // then cached) and the lead's cosine to the query.
    let mut leads: HashMap<&str, Option<(Arc<DocumentLead>, f32)>> = HashMap::new();
    for id in candidates {
        let docs: Vec<&str> = live.chunks.present(id).map(|c| c.doc_id.as_str()).filter(|d| passes(d)).collect();
        for doc in &docs {
            leads.entry(doc).or_insert_with(|| {
                let lead = live.document_lead(doc, query.len(), || document_lead(live, vectors, doc, query.len()))?;
                let similarity = best_similarity(live, vectors, &lead.id, query)?;
                Some((lead, similarity))
            });
        }
        docs_of.push((*id, docs));
    }
    let mut ranked: Vec<(f32, &str)> =
        leads.iter().filter_map(|(doc, lead)| lead.as_ref().map(|(_, similarity)| (*similarity, *doc))).collect();
    ranked.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(b.1)));
    let place: HashMap<&str, usize> = ranked.iter().enumerate().map(|(i, (_, doc))| (*doc, i + 1)).collect();
    let mut scores = HashMap::with_capacity(docs_of.len());
    for (id, docs) in docs_of {
        let best = docs
            .iter()
            .filter_map(|doc| {
                let (lead, _) = leads[doc].as_ref()?;
                Some(weight * lead.coherence * lead.agreement(&id)? / (rrf_k + place[doc] as f32))
            })
            .max_by(f32::total_cmp);
        if let Some(score) = best {
            scores.insert(id, score);
        }
    }
    let mut consulted = Vec::new();
    if with_chunks {
        // Every chunk of the documents looked at, those without a lead too.
        for doc in leads.keys() {
            match &leads[doc] {
                Some((lead, _)) => consulted.extend(lead.chunks.iter().map(|(id, _)| *id)),
                None => consulted.extend(live.chunks_of(doc)),
            }
        }
        consulted.sort_unstable();
        consulted.dedup();
    }
    (scores, consulted)
}

/// `doc`'s lead apart from any query, when it has one with a vector of
/// length `dim` (see [`DocumentLead`]).
fn document_lead(live: &LiveState, vectors: Vectors<'_>, doc: &str, dim: usize) -> Option<DocumentLead> {
    let id = live.lead(doc)?;
    let lead_vector = vector_of(live, vectors, &id, dim)?;
    let chunks: Vec<(Hash128, Option<f32>)> = live
        .chunks_of(doc)
        .into_iter()
        .map(|c| (c, vector_of(live, vectors, &c, dim).map(|v| dot(v, lead_vector).max(0.0))))
        .collect();
    let agreements: Vec<f32> = chunks.iter().filter_map(|(_, a)| *a).collect();
    let coherence = agreements.iter().sum::<f32>() / agreements.len().max(1) as f32;
    Some(DocumentLead { id, chunks, coherence })
}

/// The chunk's first live vector of length `dim`.
fn vector_of<'a>(live: &'a LiveState, vectors: Vectors<'a>, chunk_id: &Hash128, dim: usize) -> Option<&'a [f32]> {
    live.embeddings.present(chunk_id).map(|row| vectors.of(row)).find(|vector| vector.len() == dim)
}

/// Cosine of `query` with the chunk's best live vector of the same length.
pub(crate) fn best_similarity(
    live: &LiveState,
    vectors: Vectors<'_>,
    chunk_id: &Hash128,
    query: &[f32],
) -> Option<f32> {
    live.embeddings
        .present(chunk_id)
        .map(|row| vectors.of(row))
        .filter(|vector| vector.len() == query.len())
        .map(|vector| dot(vector, query))
        .max_by(f32::total_cmp)
}

/// Dot product, with four accumulators so the compiler can vectorise it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 4];
    let (a4, a_rest) = a.split_at(a.len() / 4 * 4);
    let (b4, b_rest) = b.split_at(a4.len());
    for (x, y) in a4.chunks_exact(4).zip(b4.chunks_exact(4)) {
        for i in 0..4 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_naive_sum() {
        let a: Vec<f32> = (0..11).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..11).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-4);
    }
}
