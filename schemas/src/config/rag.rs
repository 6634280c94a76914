//! `[rag]`: the steps of a retrieval-augmented answer.

use serde::{Deserialize, Serialize};

/// The steps of the retrieval-augmented answer; each can be switched off.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RagConfig {
    /// Extract filters (author, kind) from the question by matching the
    /// authors and kinds of the live documents.
    pub self_query: bool,
    /// Extra phrasings of the question written by the generator (0 = off,
    /// the default: on the FAQ set two of them left every prompt's passages
    /// as they were and cost 0.65 s per answer, `twinflow eval rag`).
    pub expansions: usize,
    /// Chunks retrieved per phrasing (hybrid search).
    pub candidates: usize,
    /// How the merged candidates are re-ordered before the best `k` are
    /// placed: see [`Rerank`].
    pub rerank: Rerank,
    /// Chunks placed in the prompt (default for requests that give no `k`).
    pub k: usize,
    /// Passages of one document placed before any document gets another
    /// (0: no limit); more documents in the prompt when a few long ones
    /// would fill it. Slots left over are filled in rank order.
    pub max_per_document: usize,
    /// Tokens of one passage in the prompt (0: the whole chunk). A longer
    /// chunk is cut to its sentences closest to the question, in their
    /// order, so that more passages fit the same prompt.
    pub passage_tokens: usize,
    /// Where the best passage stands in the prompt: see [`PassageOrder`].
    pub passage_order: PassageOrder,
    /// How answers are written (requests may choose): see [`AnswerMode`].
    pub answer: AnswerMode,
    /// Sentences a generated answer may have (0: no limit): generation stops
    /// when the next one begins.
    pub max_sentences: usize,
    /// Tokens the answer may take.
    pub max_tokens: usize,
    pub temperature: f32,
    /// Penalty on tokens the answer already used (1 = off); small models loop without one.
    pub repetition_penalty: f32,
    /// Tie every answer sentence to the passages that support it
    /// (`attribute`: cite them, drop sentences none supports, quote the
    /// passages when nothing is left) or leave the answer as generated (`off`).
    pub grounding: GroundingMode,
    /// The cosine (search encoder) from which a passage sentence supports an
    /// answer sentence.
    pub min_support: f32,
    /// The share of an answer sentence's content words (each weighed by its
    /// rarity among the prompt's passages) a supporting passage sentence must
    /// also hold (0: the cosine alone decides). The cosine alone let through
    /// sentences that only share a passage's subject.
    pub min_overlap: f32,
    /// After a generated answer's sentences, quote the evidence it does not
    /// cite: the sentences an extractive answer would quote, from passages
    /// no kept sentence rests on (`false`: quotes only as the fallback).
    /// A 135M generator's answer rests on one passage; the quotes show what
    /// the others closest to the question say.
    pub quote_evidence: bool,
}

/// How an answer is written from the prompt's passages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// By the generator, then grounded (`grounding`).
    #[default]
    Generated,
    /// Nothing generated: from each of the first two passages, its sentence
    /// closest to the question, quoted, with its marker (and from up to two
    /// later passages a sentence closer to the question than both).
    Extractive,
}

/// The order of the prompt's passages. Their markers follow their rank
/// either way (`[1]` is the best).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PassageOrder {
    /// The best first, the question after the last.
    BestFirst,
    /// The best last, next to the question: a small generator draws most on
    /// the text nearest the question (SmolLM2-135M cited a relevant passage
    /// +0.050 [0.006, 0.094] more often so, 160 questions of two sets).
    #[default]
    BestLast,
}

/// What happens to a generated answer before it is returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroundingMode {
    /// As generated.
    Off,
    /// Cited by support; unsupported sentences dropped; extractive when none
    /// is left or none rests on a passage an extractive answer would quote;
    /// followed by the quotes it does not cite with `quote_evidence`.
    #[default]
    Attribute,
}

/// How the candidates of retrieval are re-ordered by their similarity to the
/// question (the search encoder's cosine), fused by reciprocal rank with the
/// order retrieval gave them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rerank {
    /// Retrieval's order.
    Off,
    /// The chunk's vector.
    #[default]
    Chunk,
    /// The chunk's vector and, as a third ranking, its document's lead (the
    /// document's first chunk: a whole-document signal, no new embedding).
    Lead,
    /// The chunk's vector and, as a third ranking, the chunk's closest
    /// sentence (each candidate's sentences embedded at question time, with
    /// the document's title).
    Sentences,
}

impl<'de> Deserialize<'de> for Rerank {
    /// Also `true` (`chunk`) and `false` (`off`), as the setting was first written.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Switch(bool),
            Name(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Switch(true) => Ok(Self::Chunk),
            Written::Switch(false) => Ok(Self::Off),
            Written::Name(name) => match name.as_str() {
                "off" => Ok(Self::Off),
                "chunk" => Ok(Self::Chunk),
                "lead" => Ok(Self::Lead),
                "sentences" => Ok(Self::Sentences),
                other => Err(serde::de::Error::unknown_variant(other, &["off", "chunk", "lead", "sentences"])),
            },
        }
    }
}

impl Default for RagConfig {
    fn default() -> Self {
        Self {
            self_query: true,
            expansions: 0,
            candidates: 20,
            rerank: Rerank::Chunk,
            k: 8,
            max_per_document: 1,
            passage_tokens: 96,
            passage_order: PassageOrder::BestLast,
            answer: AnswerMode::Generated,
            max_sentences: 3,
            max_tokens: 256,
            temperature: 0.0,
            repetition_penalty: 1.15,
            grounding: GroundingMode::Attribute,
            min_support: 0.55,
            min_overlap: 0.5,
            quote_evidence: true,
        }
    }
}
