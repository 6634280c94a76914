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
//! | relevant words | the answer's content words found in a relevant document / its content words |
//!
//! "Supports" is judged as grounding decides it (`grounding::SupportRule`): a
//! sentence of the passage within `[rag] min_support` cosine of the answer
//! sentence, by the search encoder, that holds `[rag] min_overlap` of its
//! content words. "Relevant words" needs no encoder: how much of what the
//! answer says the judged document says too. The generator's own answer (before grounding) is judged too,
//! against every passage of its prompt: what grounding changed. With an
//! [`LlmJudge`], each answer sentence is also put to an LLM with the cited
//! passages (a judge that does not share grounding's rule).

use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use twinflow_dataflow::text::content_words;
use twinflow_models::{ChatMessage, GenerateParams, Generator};
use twinflow_schemas::api::RagTimings;
use twinflow_schemas::config::AnswerMode;

use super::beir::BeirSet;
use super::measures::{Estimate, estimate};
use crate::inference::grounding::{SupportRule, ground, sentences, supporting_passages};
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
    /// The places (markers) in the prompt of the passages from a relevant document.
    #[serde(default)]
    pub relevant_markers: Vec<usize>,
    /// The markers the answer cites.
    #[serde(default)]
    pub cited: Vec<usize>,
    /// Of those, the markers of the evidence quoted after a generated answer.
    #[serde(default)]
    pub evidence: Vec<usize>,
    pub cites_relevant: bool,
    /// `None` when the answer cites nothing.
    pub citation_precision: Option<f64>,
    pub sentences: usize,
    /// Answer sentences a cited passage supports.
    pub grounded_sentences: usize,
    pub raw_sentences: usize,
    /// The raw answer's sentences that some passage of the prompt supports.
    pub raw_supported: usize,
    /// Share of the answer's content words a relevant document holds (0
    /// for an answer without content words).
    #[serde(default)]
    pub relevant_words: f64,
    /// Answer sentences the LLM judge found supported by the cited passages
    /// (`None` without a judge).
    #[serde(default)]
    pub judged_supported: Option<usize>,
    /// Answer sentences the judge answered neither yes nor no about.
    #[serde(default)]
    pub judged_unclear: Option<usize>,
    pub timings: RagTimings,
    /// What the generator was given ([`crate::inference::Prepared::fingerprint`]);
    /// empty when nothing was to be generated.
    #[serde(default)]
    pub prompt: String,
    /// The generator's answer was taken from an earlier report (same prompt).
    #[serde(default)]
    pub reused: bool,
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
    /// The share of an answer sentence's content words a supporting passage sentence holds.
    #[serde(default)]
    pub min_overlap: f32,
    pub context_recall: Estimate,
    pub cites_relevant: Estimate,
    /// The same, counting only what the answers cite besides their evidence
    /// quotes (as with `[rag] quote_evidence = false`).
    #[serde(default)]
    pub cites_relevant_without_evidence: Estimate,
    /// Share of answers followed by evidence quotes.
    #[serde(default)]
    pub with_evidence: f64,
    /// Over the answers that cite something.
    pub citation_precision: Estimate,
    pub groundedness: Estimate,
    /// The generator's answers before grounding, against every passage of the prompt.
    pub raw_groundedness: Estimate,
    /// Share of an answer's content words that a relevant document holds.
    #[serde(default)]
    pub relevant_words: Estimate,
    /// Share of answers that grounding replaced by quoted passage sentences.
    pub extractive: f64,
    /// The LLM judge's model, when one judged.
    #[serde(default)]
    pub judge: Option<String>,
    /// Share of answer sentences the LLM judge found supported by the cited passages.
    #[serde(default)]
    pub judged_groundedness: Option<Estimate>,
    /// Share of answer sentences the judge gave no clear verdict on.
    #[serde(default)]
    pub judged_unclear: Option<f64>,
    pub latency_ms: Latency,
    /// Answers whose generation was taken from an earlier report.
    #[serde(default)]
    pub reused: usize,
    pub answers: Vec<RagAnswerReport>,
}

/// `limit` of `set`'s judged queries (spread evenly over the file), each
/// answered with `k` passages through `rag` over a store holding the set's
/// corpus; `on_answer` hears of each as it is scored. An answer of `earlier`
/// to the same question whose prompt was the same is taken instead of
/// generating again (generation is greedy by default: the same text), so
/// that a change to grounding or scoring is measured in seconds.
pub fn evaluate_rag(
    rag: &Rag<'_>,
    set: &BeirSet,
    limit: usize,
    k: usize,
    judge: Option<&LlmJudge>,
    earlier: Option<&RagReport>,
    on_answer: &mut dyn FnMut(usize, &RagAnswerReport),
) -> Result<RagReport, Error> {
    let earlier: BTreeMap<(&str, &str), &RagAnswerReport> = earlier
        .into_iter()
        .flat_map(|r| &r.answers)
        .filter(|a| !a.prompt.is_empty())
        .map(|a| ((a.query_id.as_str(), a.prompt.as_str()), a))
        .collect();
    let picked = pick_questions(set, limit)?;
    let n = picked.len();
    let mut answers = Vec::with_capacity(n);
    let mut generator = String::new();
    for (i, (query_id, question)) in picked.into_iter().enumerate() {
        let relevant = &set.qrels[query_id];
        let failed = |e: crate::inference::RagError| Error::Config(format!("question {query_id:?}: {e}"));
        let prepared = prepare(rag, &asked(rag, question, k)).map_err(failed)?;
        let passages = prepared.passages();
        let (raw, prompt, reused) = match rag.config.answer {
            AnswerMode::Generated => {
                let prompt = prepared.fingerprint(rag.config.max_sentences).to_hex();
                match earlier.get(&(query_id.as_str(), prompt.as_str())) {
                    Some(before) => (prepared.reuse(before.raw_answer.clone(), &before.timings), prompt, true),
                    None => {
                        let generated = prepared
                            .generate(rag.config.max_sentences, &mut |_| ControlFlow::Continue(()))
                            .map_err(failed)?;
                        (generated, prompt, false)
                    }
                }
            }
            AnswerMode::Extractive => (prepared.nothing_generated(), String::new(), false),
        };
        let response = ground_response(rag, question, &passages, raw.clone()).map_err(failed)?;
        generator.clone_from(&response.model);

        let relevant_markers: Vec<usize> =
            response.citations.iter().filter(|c| relevant.contains_key(&c.doc_id)).map(|c| c.marker).collect();
        let relevant_marker = |marker: &usize| relevant_markers.contains(marker);
        let cited: Vec<usize> = response.citations.iter().filter(|c| c.cited).map(|c| c.marker).collect();
        let cited_passages: Vec<String> = cited.iter().filter_map(|m| passages.get(m - 1).cloned()).collect();
        let relevant_text: HashSet<String> = set
            .corpus
            .iter()
            .filter(|d| relevant.contains_key(&d.id))
            .flat_map(|d| content_words(&format!("{}\n{}", d.title, d.text)))
            .collect();
        let answer_sentences = sentences(&response.answer);
        let raw_sentences = sentences(&raw.answer);
        // The answer's sentences and the generator's own, judged in one batch against the prompt.
        let judged: Vec<String> = answer_sentences.iter().chain(&raw_sentences).cloned().collect();
        let supporting = supporting_passages(&judged, &passages, rag.embedder, SupportRule::of(rag.config))
            .map_err(Error::Config)?;
        let (answer_support, raw_support) = supporting.split_at(answer_sentences.len());
        let verdicts = match judge {
            Some(judge) => Some(judge.judge_all(&answer_sentences, &cited_passages)?),
            None => None,
        };
        let report = RagAnswerReport {
            query_id: query_id.clone(),
            question: question.clone(),
            answer: response.answer.clone(),
            raw_answer: raw.answer.clone(),
            mode: response.grounding.as_ref().map_or_else(|| "off".to_owned(), |g| g.mode.clone()),
            context_has_relevant: !relevant_markers.is_empty(),
            cites_relevant: cited.iter().any(relevant_marker),
            citation_precision: (!cited.is_empty())
                .then(|| cited.iter().filter(|m| relevant_marker(m)).count() as f64 / cited.len() as f64),
            cited: cited.clone(),
            evidence: response.grounding.as_ref().map(|g| g.evidence.clone()).unwrap_or_default(),
            relevant_markers,
            sentences: answer_sentences.len(),
            grounded_sentences: answer_support.iter().filter(|m| m.iter().any(|m| cited.contains(m))).count(),
            raw_sentences: raw_sentences.len(),
            raw_supported: raw_support.iter().filter(|m| !m.is_empty()).count(),
            relevant_words: {
                let said = content_words(&response.answer);
                share(said.iter().filter(|w| relevant_text.contains(*w)).count(), said.len())
            },
            judged_supported: verdicts.as_ref().map(|v| v.iter().filter(|v| **v == Verdict::Yes).count()),
            judged_unclear: verdicts.as_ref().map(|v| v.iter().filter(|v| **v == Verdict::Unclear).count()),
            timings: response.timings.clone(),
            prompt,
            reused,
        };
        on_answer(i, &report);
        answers.push(report);
    }
    let mut report = summarise(set, generator, SupportRule::of(rag.config), answers);
    if let Some(judge) = judge {
        let answers = &report.answers;
        let shares: Vec<f64> = answers.iter().map(|a| share(a.judged_supported.unwrap_or(0), a.sentences)).collect();
        let unclear: usize = answers.iter().filter_map(|a| a.judged_unclear).sum();
        let sentences: usize = answers.iter().map(|a| a.sentences).sum();
        report.judge = Some(judge.name().to_owned());
        report.judged_groundedness = Some(estimate(&shares, SEED));
        report.judged_unclear = Some(share(unclear, sentences));
    }
    Ok(report)
}

/// A judge's answer about one statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Yes,
    No,
    /// Neither "yes" nor "no" came first: counted as not supported.
    Unclear,
}

/// An LLM asked, for each answer sentence, whether the passages the answer
/// cites support it (greedy, a few tokens, read by [`verdict`]).
#[derive(Clone, Debug)]
pub struct LlmJudge {
    generator: Arc<dyn Generator>,
}

impl LlmJudge {
    pub fn new(generator: Arc<dyn Generator>) -> Self {
        Self { generator }
    }

    pub fn name(&self) -> &str {
        self.generator.model_name()
    }

    /// The verdict on `statement` given `passages` (all of them in one prompt).
    pub fn judge(&self, statement: &str, passages: &[String]) -> Result<Verdict, Error> {
        if passages.is_empty() {
            return Ok(Verdict::No);
        }
        let numbered: String =
            passages.iter().enumerate().map(|(i, p)| format!("[{}] {}\n", i + 1, p.trim())).collect();
        let messages = [
            ChatMessage::new("system", "You check claims against passages. Reply Yes or No."),
            ChatMessage::new(
                "user",
                format!(
                    "Passages:\n{numbered}\nClaim: {statement}\n\nIs the claim true according to the passages? Reply Yes or No."
                ),
            ),
        ];
        let params = GenerateParams { max_tokens: 8, ..GenerateParams::default() };
        let generation = self
            .generator
            .generate(&messages, &params, &mut |_| ControlFlow::Continue(()))
            .map_err(|e| Error::Config(format!("the judge ({}) failed: {e}", self.name())))?;
        tracing::debug!(target: "eval", reply = generation.text, "judge");
        Ok(verdict(&generation.text))
    }

    /// The verdicts on each of `statements` given the same `passages`.
    pub fn judge_all(&self, statements: &[String], passages: &[String]) -> Result<Vec<Verdict>, Error> {
        statements.iter().map(|s| self.judge(s, passages)).collect()
    }
}

/// The verdict in a judge's reply: the first of its first twelve words that
/// says one ("yes", "true", "correct", "supported"; "no", "false",
/// "incorrect", "unsupported"), reversed after "not" ("the claim is not true").
fn verdict(reply: &str) -> Verdict {
    let words: Vec<String> =
        reply.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()).take(12).map(str::to_lowercase).collect();
    for (i, word) in words.iter().enumerate() {
        let says = match word.as_str() {
            "yes" | "true" | "correct" | "supported" => true,
            "no" | "false" | "incorrect" | "unsupported" => false,
            _ => continue,
        };
        let negated = i > 0 && words[i - 1] == "not";
        return if says != negated { Verdict::Yes } else { Verdict::No };
    }
    Verdict::Unclear
}

/// What [`evaluate_context`] measured: the prompts alone, nothing generated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextReport {
    pub set: String,
    pub documents: usize,
    pub questions: usize,
    pub k: usize,
    pub context_recall: Estimate,
    /// Mean passages placed (fewer than `k` when the context is full).
    pub passages: f64,
    /// Median tokens of the prompt's messages.
    pub prompt_tokens: f64,
    /// Median milliseconds to the prompt (self-query to assembly).
    pub prepare_ms: f64,
    /// Each question's id, the marker of its first relevant passage, and
    /// whether its extractive answer cites a relevant passage.
    pub first_relevant: Vec<(String, Option<usize>, bool)>,
    /// Whether an extractive answer (the passage sentences closest to the
    /// question, quoted) cites a relevant passage.
    pub extractive_cites_relevant: Estimate,
}

/// `limit` of `set`'s judged queries (spread evenly over the file), each
/// prepared with `k` passages as an answer would be, without generating:
/// whether the prompt holds a relevant passage, and what the prompt costs.
pub fn evaluate_context(rag: &Rag<'_>, set: &BeirSet, limit: usize, k: usize) -> Result<ContextReport, Error> {
    let picked = pick_questions(set, limit)?;
    let (mut hits, mut placed, mut tokens, mut times, mut first) = (vec![], vec![], vec![], vec![], vec![]);
    let mut extractive = Vec::new();
    for (query_id, question) in picked {
        let relevant = &set.qrels[query_id];
        let prepared =
            prepare(rag, &asked(rag, question, k)).map_err(|e| Error::Config(format!("question {query_id:?}: {e}")))?;
        let documents = prepared.documents();
        let at = documents.iter().position(|d| relevant.contains_key(d)).map(|i| i + 1);
        hits.push(if at.is_some() { 1.0 } else { 0.0 });
        placed.push(documents.len() as f64);
        tokens.push(prepared.prompt_tokens() as f64);
        times.push(prepared.elapsed_ms());
        let quoted = ground(question, "", &prepared.passages(), rag.embedder, SupportRule::of(rag.config), false)
            .map_err(Error::Config)?;
        let cites = quoted.cited.iter().any(|m| relevant.contains_key(&documents[m - 1]));
        extractive.push(if cites { 1.0 } else { 0.0 });
        first.push((query_id.clone(), at, cites));
    }
    Ok(ContextReport {
        set: set.name.clone(),
        documents: set.corpus.len(),
        questions: hits.len(),
        k,
        context_recall: estimate(&hits, SEED),
        passages: placed.iter().sum::<f64>() / placed.len() as f64,
        prompt_tokens: median(tokens, 0.5),
        prepare_ms: median(times, 0.5),
        first_relevant: first,
        extractive_cites_relevant: estimate(&extractive, SEED),
    })
}

/// `question` as the configured pipeline asks it: `k` passages, `[rag]`'s
/// sampling and answer mode, no filters.
fn asked(rag: &Rag<'_>, question: &str, k: usize) -> RagQuestion {
    RagQuestion {
        question: question.to_owned(),
        history: Vec::new(),
        system: None,
        filter: Default::default(),
        k,
        params: GenerateParams {
            max_tokens: rag.config.max_tokens,
            temperature: rag.config.temperature,
            repetition_penalty: rag.config.repetition_penalty,
            ..GenerateParams::default()
        },
        answer: rag.config.answer,
    }
}

/// `limit` judged queries of `set`, spread evenly over the file.
fn pick_questions(set: &BeirSet, limit: usize) -> Result<Vec<&(String, String)>, Error> {
    let judged: Vec<&(String, String)> = set.queries.iter().filter(|(id, _)| set.qrels.contains_key(id)).collect();
    if judged.is_empty() {
        return Err(Error::Config(format!("{}: no query has judgements", set.name)));
    }
    let n = limit.clamp(1, judged.len());
    Ok((0..n).map(|i| judged[i * judged.len() / n]).collect())
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

fn summarise(set: &BeirSet, generator: String, rule: SupportRule, answers: Vec<RagAnswerReport>) -> RagReport {
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
        min_support: rule.min_cosine,
        min_overlap: rule.min_overlap,
        context_recall: of(&|a| flag(a.context_has_relevant)),
        cites_relevant: of(&|a| flag(a.cites_relevant)),
        cites_relevant_without_evidence: of(&|a| {
            flag(a.cited.iter().any(|m| !a.evidence.contains(m) && a.relevant_markers.contains(m)))
        }),
        with_evidence: share(answers.iter().filter(|a| !a.evidence.is_empty()).count(), answers.len()),
        citation_precision: estimate(&precisions, SEED),
        groundedness: of(&|a| share(a.grounded_sentences, a.sentences)),
        raw_groundedness: of(&|a| share(a.raw_supported, a.raw_sentences)),
        relevant_words: of(&|a| a.relevant_words),
        extractive: share(modes.get("extractive").copied().unwrap_or(0), answers.len()),
        judge: None,
        judged_groundedness: None,
        judged_unclear: None,
        reused: answers.iter().filter(|a| a.reused).count(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use twinflow_models::{FinishReason, Generation};

    /// A judge double that says "Yes" when a passage contains the claim word for word.
    #[derive(Debug)]
    struct Literal;

    impl Generator for Literal {
        fn model_name(&self) -> &str {
            "literal"
        }
        fn context_tokens(&self) -> usize {
            4096
        }
        fn count_tokens(&self, text: &str) -> usize {
            text.split_whitespace().count()
        }
        fn generate(
            &self,
            messages: &[ChatMessage],
            _: &GenerateParams,
            _: &mut dyn FnMut(&str) -> ControlFlow<()>,
        ) -> twinflow_models::Result<Generation> {
            let user = &messages[1].content;
            let claim = user.split("Claim: ").nth(1).unwrap().split("\n").next().unwrap();
            let passages = user.split("Claim: ").next().unwrap();
            let text = if claim.contains("maybe") {
                "I think".to_owned()
            } else if passages.contains(claim) {
                "Yes, it does.".to_owned()
            } else {
                "No.".to_owned()
            };
            Ok(Generation {
                text,
                finish_reason: FinishReason::Stop,
                prompt_tokens: 0,
                completion_tokens: 1,
                prefill_ms: 0.0,
                decode_ms: 0.0,
                cached_tokens: 0,
            })
        }
    }

    #[test]
    fn the_judge_reads_the_first_word_of_each_verdict() {
        let judge = LlmJudge::new(Arc::new(Literal));
        let passages = vec!["Rivers carry boats to the sea.".to_owned(), "Taxes rose in spring.".to_owned()];
        let statements: Vec<String> =
            ["Taxes rose in spring.", "Dragons guard gold.", "maybe"].map(str::to_owned).to_vec();
        assert_eq!(judge.judge_all(&statements, &passages).unwrap(), [Verdict::Yes, Verdict::No, Verdict::Unclear]);
        // Nothing cited supports nothing.
        assert_eq!(judge.judge("Taxes rose in spring.", &[]).unwrap(), Verdict::No);
        assert_eq!(verdict("  YES."), Verdict::Yes);
        assert_eq!(verdict("Nope"), Verdict::Unclear);
        assert_eq!(verdict("The answer is: no, it is not."), Verdict::No);
        assert_eq!(verdict("The claim is not true according to the"), Verdict::No);
        assert_eq!(verdict("The claim is true."), Verdict::Yes);
        assert_eq!(verdict("one two three four five six seven eight nine ten eleven twelve yes"), Verdict::Unclear);
    }
}
