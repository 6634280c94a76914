//! The evaluation stage: how well a search setting finds what a question
//! set's judges marked relevant, measured on questions nobody templated.
//!
//! ```text
//!  BEIR set (corpus.jsonl, queries.jsonl, qrels/<split>.tsv) ─▶ the corpus committed into a store
//!     ─▶ every query × every setting (vector, bm25, hybrid fusions, whole-document vectors)
//!     ─▶ documents in rank order ─▶ nDCG@10, recall@10, MRR@10 per query ─▶ means with 95% bootstrap intervals
//!     ─▶ fusion chosen on a dev half of the queries, reported on the other half
//!     ─▶ (--promote) judged against the active setting there; registered, active when the gain is real
//!     ─▶ (rag) judged queries answered by the RAG pipeline ─▶ context recall, citations, groundedness, latency
//!  dataset version's held-out LLM-written questions and preference triples
//!     ─▶ (twin) the base model and twin versions ─▶ perplexity of the author's answers, preference accuracy
//!  every figure ─▶ the `evaluations` table (twinflow_sinks::evaluations): SQL, `/v1/evals`, the dashboard
//! ```
//!
//! | file | what it owns |
//! |---|---|
//! | `beir.rs` | reading a question set in the BEIR layout |
//! | `measures.rs` | nDCG, recall, reciprocal rank; bootstrap intervals of means and of paired differences |
//! | `retrieval.rs` | running the settings over a store and choosing a fusion from the evidence |
//! | `setting.rs` | retrieval settings as registered versions, promoted on held-out evidence |
//! | `rag.rs` | answering judged queries through the RAG pipeline and scoring the answers |
//! | `twin.rs` | held-out perplexity and preference accuracy of the base model and twin versions |

pub mod beir;
pub mod measures;
pub mod rag;
pub mod retrieval;
pub mod setting;
pub mod twin;

pub use beir::{BeirDoc, BeirSet};
pub use measures::Estimate;
pub use rag::{ContextReport, Latency, LlmJudge, RagAnswerReport, RagReport, Verdict, evaluate_context, evaluate_rag};
pub use retrieval::{RetrievalReport, SettingReport, evaluate_retrieval, fusion_grid};
pub use setting::RetrievalCard;
pub use twin::{TwinModelReport, TwinReport, evaluate_twin};
