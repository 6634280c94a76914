//! Retrieval-augmented answers: the inference pipeline behind `/v1/rag` and
//! `/v1/chat/completions`.
//!
//! ```text
//!  question ─▶ self-query: author / kind named in the question (matched against the live documents)
//!           ─▶ expansion: n rephrasings written by the generator
//!           ─▶ hybrid retrieval per phrasing (HNSW + BM25, filters inside) ─▶ merge by reciprocal rank
//!           ─▶ rerank: cosine of each candidate (and, as configured, of its document's lead or its best sentence) with the original question
//!           ─▶ prompt: numbered passages that fit the generator's context
//!           ─▶ generation (streamed) ─▶ citations: the passages whose [n] the answer uses
//!           ─▶ grounding: each sentence cited by the passages that support it, or dropped (`grounding.rs`)
//! ```
//!
//! Each step is switched by `[rag]`, timed, and logged under the `rag` target.
//! Citations only ever name passages that were in the prompt.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::Instant;

use std::sync::Arc;

use twinflow_dataflow::Embedder;
use twinflow_models::{ChatMessage, Error as ModelError, GenerateParams, Generator};
use twinflow_schemas::Hash128;
use twinflow_schemas::api::{CompletionUsage, RagResponse, RagTimings, SearchFilter, SearchHit};
use twinflow_schemas::config::{AnswerMode, Fusion, GroundingMode, RagConfig, Rerank};
use twinflow_sinks::{Store, reciprocal_rank};

use super::generator::LazyGenerator;
use super::grounding;
use super::passages::{focus, fuse_with_similarity, score_sentences, spread_over_documents};
pub use super::prompt::cited_markers;
use super::prompt::{assemble, citations};
use super::query::expand;
pub use super::query::self_query;
use super::sentence_limit::generate_sentences;
use super::traces::Traces;

/// The instructions every answer is generated under.
const INSTRUCTIONS: &str = "You answer questions in at most three sentences, using only the numbered \
context passages. After each sentence, cite the passages it uses by their numbers in square brackets, \
like [1]. If the passages do not contain the answer, say that you do not know.";

/// Tokens kept free for the chat template's markup: per message and in all
/// (per passage: `prompt.rs`).
const TEMPLATE_MARGIN: usize = 32;
const PER_MESSAGE: usize = 8;

/// What a caller asks of one answer.
#[derive(Clone, Debug)]
pub struct RagQuestion {
    pub question: String,
    /// Earlier turns of a conversation (chat completions), oldest first.
    pub history: Vec<ChatMessage>,
    /// Instructions of the caller, added to ours.
    pub system: Option<String>,
    pub filter: SearchFilter,
    pub k: usize,
    pub params: GenerateParams,
    pub answer: AnswerMode,
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

/// Why a question was not answered.
#[derive(Debug, thiserror::Error)]
pub enum RagError {
    /// No generator could be built (the model is missing, the endpoint unreachable).
    #[error("{0}")]
    GeneratorUnavailable(String),
    /// The question, conversation and answer do not fit the generator's context.
    #[error("{0}")]
    ContextLengthExceeded(String),
    /// The chat template refused the conversation (e.g. roles out of order).
    #[error("the conversation: {0}")]
    InvalidConversation(String),
    /// The generator failed while answering.
    #[error("generation failed: {0}")]
    Generation(String),
    /// Embedding the question or searching the index failed.
    #[error("retrieval failed: {0}")]
    Retrieval(String),
}

fn generator_error(e: ModelError) -> RagError {
    match e {
        ModelError::ContextOverflow { tokens, limit } => RagError::ContextLengthExceeded(format!(
            "the prompt has {tokens} tokens; the generator's context holds {limit}"
        )),
        ModelError::Tokenizer(reason) => RagError::InvalidConversation(reason),
        other => RagError::Generation(other.to_string()),
    }
}

/// What answering reads: the live index, the embedder, the generator and
/// where answers are traced.
#[derive(Clone, Debug)]
pub struct Rag<'a> {
    pub config: &'a RagConfig,
    /// Weights of the hybrid search each phrasing runs.
    pub search: Fusion,
    pub store: &'a Store,
    pub embedder: &'a dyn Embedder,
    pub generator: &'a LazyGenerator,
    pub traces: &'a Arc<Traces>,
    /// The name of the active adapter (`base` when none), recorded in traces.
    pub adapter: String,
}

/// Runs the pipeline; each piece of the answer goes to `on_text` as it is
/// generated, and the answer returned is grounded (`[rag] grounding`).
pub fn answer(
    rag: &Rag<'_>,
    request: &RagQuestion,
    on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
) -> Result<RagResponse, RagError> {
    let prepared = prepare(rag, request)?;
    let passages = prepared.passages();
    let response = match request.answer {
        AnswerMode::Generated => prepared.generate(rag.config.max_sentences, on_text)?,
        AnswerMode::Extractive => prepared.nothing_generated(),
    };
    ground_response(rag, &request.question, &passages, response)
}

/// Step 7: ties the answer's sentences to the prompt's `passages` (see
/// `grounding.rs`), unless `[rag] grounding = "off"`; an empty answer (an
/// extractive one) becomes the passages' sentences closest to the question.
pub fn ground_response(
    rag: &Rag<'_>,
    question: &str,
    passages: &[String],
    mut response: RagResponse,
) -> Result<RagResponse, RagError> {
    if rag.config.grounding == GroundingMode::Off && !response.answer.is_empty() {
        return Ok(response);
    }
    let step = Instant::now();
    let grounded = grounding::ground(
        question,
        &response.answer,
        passages,
        rag.embedder,
        grounding::SupportRule::of(rag.config),
        rag.config.quote_evidence,
    )
    .map_err(RagError::Retrieval)?;
    for citation in &mut response.citations {
        citation.cited = grounded.cited.contains(&citation.marker);
    }
    response.answer = grounded.answer;
    response.grounding = Some(grounded.report);
    response.timings.grounding_ms = ms(step);
    response.timings.total_ms += response.timings.grounding_ms;
    Ok(response)
}

/// Everything up to generation: the prompt, its passages, and what was found on the way.
pub struct Prepared {
    started: Instant,
    timings: RagTimings,
    generator: Arc<dyn Generator>,
    filter: SearchFilter,
    queries: Vec<String>,
    as_of: u64,
    placed: Vec<(f32, SearchHit)>,
    messages: Vec<ChatMessage>,
    params: GenerateParams,
    /// Where the answer is traced, with the question and the search model.
    trace: (Arc<Traces>, String, String),
    /// The request's span: its steps are its children; generation re-enters it.
    span: tracing::Span,
}

impl Prepared {
    /// The texts of the prompt's passages, by marker (`[1]` first).
    pub fn passages(&self) -> Vec<String> {
        self.placed.iter().map(|(_, hit)| hit.text.clone()).collect()
    }

    /// The document of each passage, by marker.
    pub fn documents(&self) -> Vec<String> {
        self.placed.iter().map(|(_, hit)| hit.sources.first().map(|s| s.doc_id.clone()).unwrap_or_default()).collect()
    }

    /// The prompt's tokens (its messages' text, without the template's markup).
    pub fn prompt_tokens(&self) -> usize {
        self.messages.iter().map(|m| self.generator.count_tokens(&m.content)).sum()
    }

    /// Milliseconds spent so far.
    pub fn elapsed_ms(&self) -> f64 {
        ms(self.started)
    }

    /// What generation would be given, as one hash: the generator, the
    /// prompt's messages, the sampling and `max_sentences`. The same
    /// fingerprint with greedy sampling means the same answer.
    pub fn fingerprint(&self, max_sentences: usize) -> Hash128 {
        let sampling = format!("{:?} max_sentences={max_sentences}", self.params);
        let mut parts: Vec<&[u8]> = vec![self.generator.model_name().as_bytes(), sampling.as_bytes()];
        for message in &self.messages {
            parts.extend([message.role.as_bytes(), message.content.as_bytes()]);
        }
        Hash128::of_parts(&parts)
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("as_of", &self.as_of)
            .field("passages", &self.placed.len())
            .finish_non_exhaustive()
    }
}

/// Steps 1–5 (self-query, expansion, retrieval, rerank, prompt): blocking;
/// every error a request can cause surfaces here, before any answer is streamed.
pub fn prepare(rag: &Rag<'_>, request: &RagQuestion) -> Result<Prepared, RagError> {
    let config: &RagConfig = rag.config;
    let started = Instant::now();
    let span = tracing::info_span!(
        "rag",
        question_chars = request.question.len(),
        k = request.k,
        as_of = tracing::field::Empty
    );
    let _request = span.enter();
    let mut timings = RagTimings::default();
    let generator = rag.generator.get().map_err(RagError::GeneratorUnavailable)?;

    // 1. Self-query.
    let step_span = tracing::info_span!("self_query").entered();
    let step = Instant::now();
    let mut filter = request.filter.clone();
    if config.self_query {
        let (authors, kinds) = rag.store.facets();
        let found = self_query(&request.question, &authors, &kinds);
        filter.author = filter.author.or(found.author);
        filter.kind = filter.kind.or(found.kind);
    }
    timings.self_query_ms = ms(step);
    drop(step_span);
    tracing::debug!(target: "rag", ms = timings.self_query_ms, ?filter, "self-query");

    // 2. Query expansion.
    let step_span = tracing::info_span!("expansion").entered();
    let step = Instant::now();
    let mut queries = vec![request.question.clone()];
    if config.expansions > 0 {
        queries.extend(expand(generator.as_ref(), &request.question, config.expansions));
    }
    timings.expansion_ms = ms(step);
    drop(step_span);
    tracing::debug!(target: "rag", ms = timings.expansion_ms, ?queries, "expansion");

    // 3. Hybrid retrieval per phrasing, merged by reciprocal rank.
    let step_span = tracing::info_span!("retrieval").entered();
    let step = Instant::now();
    let texts: Vec<&str> = queries.iter().map(String::as_str).collect();
    let vectors = rag.embedder.embed_batch(&texts).map_err(|e| RagError::Retrieval(e.to_string()))?;
    let mode = rag.search.mode();
    let mut as_of = 0;
    let mut found: HashMap<Hash128, SearchHit> = HashMap::new();
    let mut rankings: Vec<Vec<Hash128>> = Vec::with_capacity(texts.len());
    for (text, vector) in texts.iter().zip(&vectors) {
        let (epoch, hits) = rag
            .store
            .search_mode(text, vector, config.candidates.max(request.k), &filter, mode, false)
            .map_err(|e| RagError::Retrieval(e.to_string()))?;
        as_of = as_of.max(epoch);
        rankings.push(hits.iter().map(|hit| hit.chunk_id).collect());
        for hit in hits {
            found.entry(hit.chunk_id).or_insert(hit);
        }
    }
    // The phrasings' rankings merged by the same fusion as hybrid search, with equal weights.
    let weighted: Vec<(f32, &[Hash128])> = rankings.iter().map(|r| (1.0, r.as_slice())).collect();
    let mut candidates: Vec<(f32, SearchHit)> = reciprocal_rank(&weighted, rag.search.rrf_k)
        .into_iter()
        .filter_map(|(id, score)| found.remove(&id).map(|hit| (score, hit)))
        .collect();
    timings.retrieval_ms = ms(step);
    drop(step_span);
    tracing::debug!(target: "rag", ms = timings.retrieval_ms, candidates = candidates.len(), as_of, "retrieval");

    // 4. Rerank by similarity to the original question, fused with retrieval's order.
    let step_span = tracing::info_span!("rerank").entered();
    let step = Instant::now();
    let mut sentence_scores = HashMap::new();
    if config.rerank != Rerank::Off && !candidates.is_empty() {
        let ids: Vec<Hash128> = candidates.iter().map(|(_, h)| h.chunk_id).collect();
        let mut similarities = vec![rag.store.similarities(&vectors[0], &ids)];
        if config.rerank == Rerank::Sentences {
            sentence_scores = score_sentences(rag.embedder, &vectors[0], candidates.iter().map(|(_, h)| h))?;
            similarities.push(
                ids.iter()
                    .map(|id| sentence_scores.get(id).and_then(|s| s.iter().map(|(_, c)| *c).reduce(f32::max)))
                    .collect(),
            );
        }
        if config.rerank == Rerank::Lead {
            // What each candidate's document is about: its lead's similarity (a whole-document signal).
            let docs: Vec<&str> =
                candidates.iter().map(|(_, h)| h.sources.first().map_or("", |s| s.doc_id.as_str())).collect();
            similarities.push(rag.store.lead_similarities(&vectors[0], &docs));
        }
        candidates = fuse_with_similarity(candidates, &similarities, rag.search.rrf_k);
    }
    let mut candidates = spread_over_documents(candidates, request.k, config.max_per_document);
    if config.passage_tokens > 0 {
        let long: Vec<&SearchHit> = candidates
            .iter()
            .map(|(_, h)| h)
            .filter(|h| {
                !sentence_scores.contains_key(&h.chunk_id) && generator.count_tokens(&h.text) > config.passage_tokens
            })
            .collect();
        if !long.is_empty() {
            sentence_scores.extend(score_sentences(rag.embedder, &vectors[0], long.into_iter())?);
        }
        for (_, hit) in &mut candidates {
            if let Some(scores) = sentence_scores.get(&hit.chunk_id) {
                hit.text = focus(&|t| generator.count_tokens(t), &hit.text, scores, config.passage_tokens);
            }
        }
    }
    timings.rerank_ms = ms(step);
    drop(step_span);

    // 5. Prompt within the generator's context.
    let step_span = tracing::info_span!("prompt").entered();
    let step = Instant::now();
    let system = match &request.system {
        Some(extra) => format!("{INSTRUCTIONS}\n{extra}"),
        None => INSTRUCTIONS.to_owned(),
    };
    let question_part = format!("Question: {}", request.question);
    let fixed: usize = [system.as_str(), question_part.as_str()]
        .iter()
        .map(|t| generator.count_tokens(t))
        .chain(request.history.iter().map(|m| generator.count_tokens(&m.content) + PER_MESSAGE))
        .sum::<usize>()
        + 2 * PER_MESSAGE;
    let budget = generator
        .context_tokens()
        .checked_sub(fixed + request.params.max_tokens + TEMPLATE_MARGIN)
        .ok_or_else(|| {
            RagError::ContextLengthExceeded(format!(
                "the question and conversation take {fixed} tokens and the answer {}; the generator's context holds {}",
                request.params.max_tokens,
                generator.context_tokens()
            ))
        })?;
    let (context, placed) = assemble(generator.as_ref(), &candidates, budget, config.passage_order);
    let mut messages = vec![ChatMessage::new("system", system)];
    messages.extend(request.history.iter().cloned());
    let user = if context.is_empty() {
        format!("Context: (no passages found)\n\n{question_part}")
    } else {
        format!("Context:\n{context}\n{question_part}")
    };
    messages.push(ChatMessage::new("user", user));
    timings.prompt_ms = ms(step);
    drop(step_span);
    span.record("as_of", as_of);
    drop(_request);
    Ok(Prepared {
        started,
        timings,
        generator,
        filter,
        queries,
        as_of,
        placed,
        messages,
        params: request.params.clone(),
        trace: (rag.traces.clone(), request.question.clone(), format!("{}+{}", rag.embedder.model_id(), rag.adapter)),
        span,
    })
}

impl Prepared {
    /// Step 6: generation, then the citations.
    /// At most `max_sentences` sentences are generated (0: no limit): the
    /// piece that begins the next one stops generation and is not passed on.
    pub fn generate(
        self,
        max_sentences: usize,
        on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<RagResponse, RagError> {
        let Prepared { started, mut timings, generator, filter, queries, as_of, placed, messages, params, trace, span } =
            self;
        let _request = span.enter();
        let step = Instant::now();
        let step_span = tracing::info_span!("generate").entered();
        let generation = generate_sentences(generator.as_ref(), &messages, &params, max_sentences, on_text)
            .map_err(generator_error)?;
        crate::metrics::generation(generator.model_name(), &generation);
        timings.prefill_ms = generation.prefill_ms;
        timings.generation_ms = ms(step);
        drop(step_span);
        let cited = cited_markers(&generation.text);
        let citations = citations(&placed, &cited);
        timings.total_ms = ms(started);
        tracing::info!(
            target: "rag",
            as_of,
            queries = queries.len(),
            passages = placed.len(),
            prompt_tokens = generation.prompt_tokens,
            cached_tokens = generation.cached_tokens,
            completion_tokens = generation.completion_tokens,
            self_query_ms = timings.self_query_ms,
            expansion_ms = timings.expansion_ms,
            retrieval_ms = timings.retrieval_ms,
            rerank_ms = timings.rerank_ms,
            generation_ms = timings.generation_ms,
            total_ms = timings.total_ms,
            "answered"
        );
        let response = RagResponse {
            answer: generation.text,
            citations,
            as_of,
            model: generator.model_name().to_owned(),
            filters: filter,
            queries,
            finish_reason: match generation.finish_reason {
                twinflow_models::FinishReason::Stop => "stop".into(),
                twinflow_models::FinishReason::Length => "length".into(),
            },
            usage: CompletionUsage {
                prompt_tokens: generation.prompt_tokens,
                completion_tokens: generation.completion_tokens,
                total_tokens: generation.prompt_tokens + generation.completion_tokens,
            },
            timings,
            grounding: None,
        };
        let (traces, question, search_model) = trace;
        traces.record(&question, &response, search_model);
        Ok(response)
    }

    /// Step 6 skipped (an extractive answer): the citations, an empty answer.
    pub fn nothing_generated(self) -> RagResponse {
        self.answered_before(String::new(), "extractive".into(), None)
    }

    /// Step 6 done before: `answer` is what the generator gave this prompt
    /// (the same [`Self::fingerprint`]) when `earlier` was measured, whose
    /// prefill and generation times are carried over.
    pub fn reuse(self, answer: String, earlier: &RagTimings) -> RagResponse {
        let model = self.generator.model_name().to_owned();
        self.answered_before(answer, model, Some(earlier))
    }

    /// The response with `answer` (by `model`) and no generation now, traced.
    fn answered_before(self, answer: String, model: String, earlier: Option<&RagTimings>) -> RagResponse {
        let Prepared { started, mut timings, filter, queries, as_of, placed, trace, .. } = self;
        timings.total_ms = ms(started);
        if let Some(earlier) = earlier {
            timings.prefill_ms = earlier.prefill_ms;
            timings.generation_ms = earlier.generation_ms;
            timings.total_ms += earlier.generation_ms;
        }
        let response = RagResponse {
            citations: citations(&placed, &cited_markers(&answer)),
            answer,
            as_of,
            model,
            filters: filter,
            queries,
            finish_reason: "stop".into(),
            usage: CompletionUsage::default(),
            timings,
            grounding: None,
        };
        let (traces, question, search_model) = trace;
        traces.record(&question, &response, search_model);
        response
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A generator double that streams a fixed text word by word; a token
    /// is a word (the prompt's tests budget with it too).
    #[derive(Debug)]
    pub(in crate::inference) struct Words(pub &'static str);

    impl Generator for Words {
        fn model_name(&self) -> &str {
            "words"
        }
        fn context_tokens(&self) -> usize {
            4096
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }
        fn generate(
            &self,
            _: &[ChatMessage],
            _: &GenerateParams,
            on_text: &mut dyn FnMut(&str) -> ControlFlow<()>,
        ) -> Result<twinflow_models::Generation, ModelError> {
            let mut text = String::new();
            let mut finish_reason = twinflow_models::FinishReason::Length;
            for piece in self.0.split_inclusive(' ') {
                text.push_str(piece);
                if on_text(piece).is_break() {
                    finish_reason = twinflow_models::FinishReason::Stop;
                    break;
                }
            }
            let completion_tokens = text.split_whitespace().count();
            Ok(twinflow_models::Generation {
                text,
                finish_reason,
                prompt_tokens: 1,
                completion_tokens,
                prefill_ms: 0.0,
                decode_ms: 0.0,
                cached_tokens: 0,
            })
        }
    }
}
