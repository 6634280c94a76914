//! RAG on a question set: judged queries answered by the configured pipeline
//! (self-query, expansion, retrieval, prompt, generation, grounding) over a
//! store holding the set's corpus, then scored against the judgements.
//!
//! | measure | per question |
//! |---|---|
//! | context recall | a relevant document is among the prompt's passages |
//! | cites relevant | the answer cites a passage of a relevant document |
//! | citation precision | cited passages of relevant documents / cited passages |
//! | groundedness | answer sentences that a cited passage supports / answer sentences |
//!
//! "Supports" is judged as grounding decides it: a sentence of the passage
//! within `[rag] min_support` cosine of the answer sentence, by the search
//! encoder. The generator's own answer (before grounding) is judged too,
//! against every passage of its prompt: what grounding changed.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use serde::{Deserialize, Serialize};
use twinflow_dataflow::{Embedder, cosine};
use twinflow_models::GenerateParams;
use twinflow_schemas::api::RagTimings;

use super::beir::BeirSet;
use super::measures::{Estimate, estimate};
use crate::inference::grounding::sentences;
use crate::inference::{Rag, RagQuestion, ground_response, prepare};
use crate::training::Error;

/// Seed of the bootstrap intervals.
const SEED: u64 = 27;

/// One answered question.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RagAnswerReport {
    pub query_id: String,
    pub question: String,
    pub answer: String,
    /// The generator's answer before grounding.
    pub raw_answer: String,
    /// `generated`, `extractive`, or `off` (grounding switched off).
    pub mode: String,
    pub context_has_relevant: bool,
    pub cites_relevant: bool,
    /// `None` when the answer cites nothing.
    pub citation_precision: Option<f64>,
    pub sentences: usize,
    /// Answer sentences a cited passage supports.
    pub grounded_sentences: usize,
    pub raw_sentences: usize,
    /// The raw answer's sentences that some passage of the prompt supports.
    pub raw_supported: usize,
    pub timings: RagTimings,
}

/// Medians of the answers' step timings, in milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub total: f64,
    pub total_p90: f64,
    pub expansion: f64,
    pub retrieval: f64,
    pub prefill: f64,
    pub generation: f64,
    pub grounding: f64,
}

/// What [`evaluate_rag`] measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RagReport {
    pub set: String,
    pub documents: usize,
    pub questions: usize,
    pub generator: String,
    /// The cosine from which a passage sentence supports an answer sentence.
    pub min_support: f32,
    pub context_recall: Estimate,
    pub cites_relevant: Estimate,
    /// Over the answers that cite something.
    pub citation_precision: Estimate,
    pub groundedness: Estimate,
    /// The generator's answers before grounding, against every passage of the prompt.
    pub raw_groundedness: Estimate,
    /// Share of answers that grounding replaced by quoted passage sentences.
    pub extractive: f64,
    pub latency_ms: Latency,
    pub answers: Vec<RagAnswerReport>,
}

/// `limit` of `set`'s judged queries (spread evenly over the file), each
/// answered with `k` passages through `rag` over a store holding the set's
/// corpus; `on_answer` hears of each as it is scored.
pub fn evaluate_rag(
    rag: &Rag<'_>,
    set: &BeirSet,
    limit: usize,
    k: usize,
    on_answer: &mut dyn FnMut(usize, &RagAnswerReport),
) -> Result<RagReport, Error> {
    let judged: Vec<&(String, String)> = set.queries.iter().filter(|(id, _)| set.qrels.contains_key(id)).collect();
    if judged.is_empty() {
        return Err(Error::Config(format!("{}: no query has judgements", set.name)));
    }
    let n = limit.clamp(1, judged.len());
    let picked: Vec<&(String, String)> = (0..n).map(|i| judged[i * judged.len() / n]).collect();
    let params = GenerateParams {
        max_tokens: rag.config.max_tokens,
        temperature: rag.config.temperature,
        repetition_penalty: rag.config.repetition_penalty,
        ..GenerateParams::default()
    };
    let mut answers = Vec::with_capacity(n);
    let mut generator = String::new();
    for (i, (query_id, question)) in picked.into_iter().enumerate() {
        let relevant = &set.qrels[query_id];
        let ask = RagQuestion {
            question: question.clone(),
            history: Vec::new(),
            system: None,
            filter: Default::default(),
            k,
            params: params.clone(),
        };
        let failed = |e: crate::inference::RagError| Error::Config(format!("question {query_id:?}: {e}"));
        let prepared = prepare(rag, &ask).map_err(failed)?;
        let passages = prepared.passages();
        let raw = prepared.generate(&mut |_| ControlFlow::Continue(())).map_err(failed)?;
        let response = ground_response(rag, question, &passages, raw.clone()).map_err(failed)?;
        generator.clone_from(&response.model);

        let relevant_marker =
            |marker: usize| response.citations.iter().any(|c| c.marker == marker && relevant.contains_key(&c.doc_id));
        let cited: Vec<usize> = response.citations.iter().filter(|c| c.cited).map(|c| c.marker).collect();
        let cited_passages: Vec<String> = cited.iter().filter_map(|m| passages.get(m - 1).cloned()).collect();
        let answer_sentences = sentences(&response.answer);
        let raw_sentences = sentences(&raw.answer);
        let judge = |said: &[String], by: &[String]| supported(rag.embedder, said, by, rag.config.min_support);
        let report = RagAnswerReport {
            query_id: query_id.clone(),
            question: question.clone(),
            answer: response.answer.clone(),
            raw_answer: raw.answer.clone(),
            mode: response.grounding.as_ref().map_or_else(|| "off".to_owned(), |g| g.mode.clone()),
            context_has_relevant: response.citations.iter().any(|c| relevant.contains_key(&c.doc_id)),
            cites_relevant: cited.iter().any(|m| relevant_marker(*m)),
            citation_precision: (!cited.is_empty())
                .then(|| cited.iter().filter(|m| relevant_marker(**m)).count() as f64 / cited.len() as f64),
            sentences: answer_sentences.len(),
            grounded_sentences: judge(&answer_sentences, &cited_passages)?,
            raw_sentences: raw_sentences.len(),
            raw_supported: judge(&raw_sentences, &passages)?,
            timings: response.timings.clone(),
        };
        on_answer(i, &report);
        answers.push(report);
    }
    Ok(summarise(set, generator, rag.config.min_support, answers))
}

/// How many of `said` a sentence of `by` supports (cosine ≥ `min_support`).
fn supported(embedder: &dyn Embedder, said: &[String], by: &[String], min_support: f32) -> Result<usize, Error> {
    let support: Vec<String> = by.iter().flat_map(|p| sentences(p)).collect();
    if said.is_empty() || support.is_empty() {
        return Ok(0);
    }
    let texts: Vec<&str> = said.iter().chain(&support).map(String::as_str).collect();
    let vectors = embedder.embed_batch(&texts).map_err(|e| Error::Config(format!("judging support: {e}")))?;
    let (answers, passages) = vectors.split_at(said.len());
    Ok(answers.iter().filter(|a| passages.iter().any(|p| cosine(a, p) >= min_support)).count())
}

fn share(part: usize, whole: usize) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

fn median(mut values: Vec<f64>, q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * q).round() as usize]
}

fn summarise(set: &BeirSet, generator: String, min_support: f32, answers: Vec<RagAnswerReport>) -> RagReport {
    let of = |f: &dyn Fn(&RagAnswerReport) -> f64| estimate(&answers.iter().map(f).collect::<Vec<_>>(), SEED);
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let precisions: Vec<f64> = answers.iter().filter_map(|a| a.citation_precision).collect();
    let timing = |q: f64, f: &dyn Fn(&RagTimings) -> f64| median(answers.iter().map(|a| f(&a.timings)).collect(), q);
    let modes: BTreeMap<&str, usize> = answers.iter().fold(BTreeMap::new(), |mut m, a| {
        *m.entry(a.mode.as_str()).or_default() += 1;
        m
    });
    RagReport {
        set: set.name.clone(),
        documents: set.corpus.len(),
        questions: answers.len(),
        generator,
        min_support,
        context_recall: of(&|a| flag(a.context_has_relevant)),
        cites_relevant: of(&|a| flag(a.cites_relevant)),
        citation_precision: estimate(&precisions, SEED),
        groundedness: of(&|a| share(a.grounded_sentences, a.sentences)),
        raw_groundedness: of(&|a| share(a.raw_supported, a.raw_sentences)),
        extractive: share(modes.get("extractive").copied().unwrap_or(0), answers.len()),
        latency_ms: Latency {
            total: timing(0.5, &|t| t.total_ms),
            total_p90: timing(0.9, &|t| t.total_ms),
            expansion: timing(0.5, &|t| t.expansion_ms),
            retrieval: timing(0.5, &|t| t.retrieval_ms),
            prefill: timing(0.5, &|t| t.prefill_ms),
            generation: timing(0.5, &|t| t.generation_ms),
            grounding: timing(0.5, &|t| t.grounding_ms),
        },
        answers,
    }
}
