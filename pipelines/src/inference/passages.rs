//! Which passages a prompt holds, and how much of each: the candidates'
//! retrieval order fused with their similarity to the question, spread over
//! documents, and each cut to its sentences closest to the question.

use std::collections::HashMap;
use std::ops::Range;

use twinflow_dataflow::{Embedder, cosine};
use twinflow_schemas::Hash128;
use twinflow_schemas::api::SearchHit;
use unicode_segmentation::UnicodeSegmentation;

use super::rag::RagError;

/// The first `k` of `ranked`, taking at most `per_document` passages of one
/// document (by its first source) in a first pass, then filling what is left
/// in rank order; `per_document` 0 takes the first `k` as they come.
pub(super) fn spread_over_documents(
    ranked: Vec<(f32, SearchHit)>,
    k: usize,
    per_document: usize,
) -> Vec<(f32, SearchHit)> {
    if per_document == 0 || ranked.len() <= k {
        return ranked.into_iter().take(k).collect();
    }
    let mut taken: HashMap<String, usize> = HashMap::new();
    let (mut first, mut rest) = (Vec::with_capacity(k), Vec::new());
    for (score, hit) in ranked {
        let doc = hit.sources.first().map(|s| s.doc_id.clone()).unwrap_or_default();
        let count = taken.entry(doc).or_default();
        if first.len() < k && *count < per_document {
            *count += 1;
            first.push((score, hit));
        } else {
            rest.push((score, hit));
        }
    }
    let missing = k.saturating_sub(first.len());
    first.extend(rest.into_iter().take(missing));
    first.sort_by(|a, b| b.0.total_cmp(&a.0));
    first
}

/// `ranked` (best first) re-ordered by reciprocal-rank fusion of that order
/// with the order of each list of `similarities` (a candidate without one
/// in a list gets nothing from it); the fused score replaces the retrieval score.
pub(super) fn fuse_with_similarity(
    ranked: Vec<(f32, SearchHit)>,
    similarities: &[Vec<Option<f32>>],
    rrf_k: f32,
) -> Vec<(f32, SearchHit)> {
    let rrf = |rank: usize| 1.0 / (rrf_k + rank as f32 + 1.0);
    let mut scores: Vec<f32> = (0..ranked.len()).map(rrf).collect();
    for list in similarities {
        let mut order: Vec<usize> = (0..ranked.len()).filter(|i| list[*i].is_some()).collect();
        order.sort_by(|a, b| list[*b].unwrap_or(0.0).total_cmp(&list[*a].unwrap_or(0.0)).then(a.cmp(b)));
        for (rank, i) in order.into_iter().enumerate() {
            scores[i] += rrf(rank);
        }
    }
    let mut fused: Vec<(f32, SearchHit)> =
        scores.into_iter().zip(ranked).map(|(score, (_, hit))| (score, hit)).collect();
    // Stable: ties keep retrieval's order.
    fused.sort_by(|a, b| b.0.total_cmp(&a.0));
    fused
}

/// The sentences of a passage, as byte ranges of its text: UAX #29 sentence
/// bounds, also split at line breaks; pieces with fewer than two letters or
/// digits (bullets, blank lines) are left out.
fn sentence_spans(text: &str) -> Vec<Range<usize>> {
    let mut spans = Vec::new();
    for (start, piece) in text.split_sentence_bound_indices() {
        let mut offset = start;
        for line in piece.split_inclusive('\n') {
            let trimmed = line.trim();
            if trimmed.chars().filter(|c| c.is_alphanumeric()).count() >= 2 {
                let lead = line.len() - line.trim_start().len();
                spans.push(offset + lead..offset + lead + trimmed.len());
            }
            offset += line.len();
        }
    }
    spans
}

/// Each hit's sentences with their cosine to `question`, by chunk: the
/// sentences are embedded in one batch, each after its document's title as
/// chunks are.
pub(super) fn score_sentences<'h>(
    embedder: &dyn Embedder,
    question: &[f32],
    hits: impl Iterator<Item = &'h SearchHit>,
) -> Result<HashMap<Hash128, Vec<(Range<usize>, f32)>>, RagError> {
    let mut spans: Vec<(Hash128, Vec<Range<usize>>)> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    for hit in hits {
        let title = hit.sources.first().map_or("", |s| s.title.as_str());
        let these = sentence_spans(&hit.text);
        texts.extend(these.iter().map(|r| {
            if title.is_empty() {
                hit.text[r.clone()].to_owned()
            } else {
                format!("{title}\n\n{}", &hit.text[r.clone()])
            }
        }));
        spans.push((hit.chunk_id, these));
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let vectors = rag_embed(embedder, &refs)?;
    let mut vectors = vectors.iter();
    Ok(spans
        .into_iter()
        .map(|(id, these)| {
            let scored = these.into_iter().zip(vectors.by_ref()).map(|(r, v)| (r, cosine(question, v))).collect();
            (id, scored)
        })
        .collect())
}

fn rag_embed(embedder: &dyn Embedder, texts: &[&str]) -> Result<Vec<Vec<f32>>, RagError> {
    if texts.is_empty() {
        return Ok(Vec::new());
    }
    let vectors = embedder.embed_batch(texts).map_err(|e| RagError::Retrieval(e.to_string()))?;
    if vectors.len() != texts.len() {
        return Err(RagError::Retrieval(format!(
            "the encoder returned {} vectors for {} texts",
            vectors.len(),
            texts.len()
        )));
    }
    Ok(vectors)
}

/// `text` cut to its sentences closest to the question (`scores`: each
/// sentence's span and cosine) that fit in `budget` generator tokens, in
/// their order; gaps are marked "…". The best sentence is always kept.
pub(super) fn focus(
    count_tokens: &dyn Fn(&str) -> usize,
    text: &str,
    scores: &[(Range<usize>, f32)],
    budget: usize,
) -> String {
    if scores.is_empty() || count_tokens(text) <= budget {
        return text.to_owned();
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].1.total_cmp(&scores[*a].1).then(a.cmp(b)));
    let mut kept = vec![false; scores.len()];
    let mut used = 0;
    for i in order {
        let cost = count_tokens(&text[scores[i].0.clone()]) + 1;
        if used + cost <= budget || used == 0 {
            kept[i] = true;
            used += cost;
        }
    }
    let mut out = String::new();
    let mut last: Option<usize> = None;
    for (i, (span, _)) in scores.iter().enumerate().filter(|(i, _)| kept[*i]) {
        match last {
            Some(prev) if prev + 1 == i => out.push_str(&text[scores[prev].0.end..span.start]),
            Some(_) => out.push_str(" … "),
            None if i > 0 => out.push_str("… "),
            None => {}
        }
        out.push_str(&text[span.clone()]);
        last = Some(i);
    }
    if last.is_some_and(|l| l + 1 < scores.len()) {
        out.push_str(" …");
    }
    out
}

#[cfg(test)]
mod tests {
    use twinflow_schemas::DocumentKind;

    use super::*;

    #[test]
    fn passages_split_at_sentences_and_lines() {
        let text = "First one. Second one!\n- a list item\n\n  Third, indented.";
        let spans: Vec<&str> = sentence_spans(text).into_iter().map(|r| &text[r]).collect();
        assert_eq!(spans, ["First one.", "Second one!", "- a list item", "Third, indented."]);
    }

    #[test]
    fn focus_keeps_the_closest_sentences_in_order_within_the_budget() {
        let text = "Alpha beta. Gamma delta epsilon. Zeta eta. Theta iota kappa.";
        let spans = sentence_spans(text);
        let words = |t: &str| t.split_whitespace().count();
        let scores: Vec<(Range<usize>, f32)> = spans.into_iter().zip([0.9, 0.1, 0.8, 0.2]).collect();
        // Each sentence costs its words + 1: the best (3) and the third best (3) fit in 6.
        assert_eq!(focus(&words, text, &scores, 6), "Alpha beta. … Zeta eta. …");
        let scores: Vec<(Range<usize>, f32)> = scores.into_iter().map(|(r, s)| (r, 1.0 - s)).collect();
        assert_eq!(focus(&words, text, &scores, 9), "… Gamma delta epsilon. … Theta iota kappa.");
        // Neighbours keep what stood between them; a text that fits stays whole.
        let scores: Vec<(Range<usize>, f32)> =
            scores.into_iter().zip([0.9, 0.8, 0.0, 0.0]).map(|((r, _), s)| (r, s)).collect();
        assert_eq!(focus(&words, text, &scores, 7), "Alpha beta. Gamma delta epsilon. …");
        assert_eq!(focus(&words, text, &scores, 100), text);
        // The best sentence is kept even when it alone is over the budget.
        assert_eq!(focus(&words, text, &scores, 1), "Alpha beta. …");
    }

    #[test]
    fn rerank_fuses_similarity_with_retrieval_order() {
        let hit = |n: u8| -> (f32, SearchHit) {
            let hit = SearchHit {
                chunk_id: Hash128::of(&[n]),
                score: 0.0,
                vector_score: None,
                bm25_score: None,
                text: n.to_string(),
                sources: Vec::new(),
            };
            (0.0, hit)
        };
        let ranked = vec![hit(0), hit(1), hit(2), hit(3)];
        // The last by retrieval is the most similar: it moves up, not to the top.
        let fused = fuse_with_similarity(ranked, &[vec![Some(0.5), Some(0.4), Some(0.3), Some(0.9)]], 1.0);
        let order: Vec<&str> = fused.iter().map(|(_, h)| h.text.as_str()).collect();
        assert_eq!(order, ["0", "3", "1", "2"]);
        // Without a vector a candidate keeps only its retrieval rank.
        let fused = fuse_with_similarity(vec![hit(0), hit(1)], &[vec![None, Some(0.1)]], 1.0);
        let order: Vec<&str> = fused.iter().map(|(_, h)| h.text.as_str()).collect();
        assert_eq!(order, ["1", "0"]);
        // Two lists that agree outvote retrieval's order: the last becomes first.
        let lists = [vec![Some(0.1), Some(0.2), Some(0.3)], vec![Some(0.0), Some(0.5), Some(0.9)]];
        let fused = fuse_with_similarity(vec![hit(0), hit(1), hit(2)], &lists, 1.0);
        assert_eq!(fused[0].1.text, "2");
        assert!(fused[0].0 > fused[1].0);
    }

    #[test]
    fn passages_spread_over_documents_then_fill_in_rank_order() {
        let hit = |doc: &str, n: u8| -> (f32, SearchHit) {
            let source = twinflow_schemas::api::ChunkSource {
                doc_id: doc.to_owned(),
                ordinal: u32::from(n),
                char_start: 0,
                char_end: 1,
                page_start: None,
                page_end: None,
                title: String::new(),
                url: String::new(),
                author: String::new(),
                kind: DocumentKind::Article,
            };
            let hit = SearchHit {
                chunk_id: Hash128::of(&[n]),
                score: 0.0,
                vector_score: None,
                bm25_score: None,
                text: String::new(),
                sources: vec![source],
            };
            (1.0 - f32::from(n) / 10.0, hit)
        };
        let ranked = || vec![hit("a", 0), hit("a", 1), hit("a", 2), hit("b", 3), hit("c", 4), hit("a", 5)];
        let docs = |picked: Vec<(f32, SearchHit)>| -> Vec<String> {
            picked.into_iter().map(|(_, h)| format!("{}{}", h.sources[0].doc_id, h.sources[0].ordinal)).collect()
        };
        assert_eq!(docs(spread_over_documents(ranked(), 3, 0)), ["a0", "a1", "a2"], "no limit: rank order");
        assert_eq!(docs(spread_over_documents(ranked(), 3, 1)), ["a0", "b3", "c4"]);
        assert_eq!(docs(spread_over_documents(ranked(), 4, 1)), ["a0", "a1", "b3", "c4"], "filled in rank order");
        assert_eq!(docs(spread_over_documents(ranked(), 4, 2)), ["a0", "a1", "b3", "c4"]);
        assert_eq!(spread_over_documents(ranked(), 10, 1).len(), 6, "never more than there are");
    }
}
