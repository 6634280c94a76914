//! Shared helpers: an app on a temp dir, request builders.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use twinflow_schemas::auth::{Scope, key_sha256};
use twinflow_schemas::config::{Config, EmbedderConfig, HashingEmbedderConfig, KeyConfig};
use twinflow_server::App;

/// The in-process apps' keys, one per scope (configured as their digests, as a user would).
pub(crate) const ADMIN_KEY: &str = "tfk_test-admin-key";
pub(crate) const READ_KEY: &str = "tfk_test-read-key";
pub(crate) const WRITE_KEY: &str = "tfk_test-write-key";

/// The test keys: (name, scope, key).
const TEST_KEYS: [(&str, Scope, &str); 3] =
    [("admin", Scope::Admin, ADMIN_KEY), ("reader", Scope::Read, READ_KEY), ("writer", Scope::Write, WRITE_KEY)];

pub(crate) fn test_keys() -> Vec<KeyConfig> {
    TEST_KEYS
        .into_iter()
        .map(|(name, scope, key)| KeyConfig {
            name: name.into(),
            scopes: vec![scope],
            sha256: key_sha256(key),
            scram: None,
        })
        .collect()
}

/// Gives each test key of `config` its SCRAM verifier, as `twinflow keys create` prints it.
pub(crate) fn give_scram_verifiers(config: &mut Config) {
    for key in &mut config.auth.keys {
        if let Some((.., secret)) = TEST_KEYS.iter().find(|(name, ..)| *name == key.name) {
            key.scram = Some(twinflow_server::scram::Verifier::derive(secret).unwrap().to_string());
        }
    }
}

/// The `[auth]` section of a test's config file: the admin test key.
pub(crate) fn auth_toml() -> String {
    format!("\n[auth]\nkeys = [{{ name = \"test\", scopes = [\"admin\"], sha256 = \"{}\" }}]\n", key_sha256(ADMIN_KEY))
}

/// A blocking HTTP client that sends `key` with every request.
pub(crate) fn http_with_key(key: &str, timeout: Duration) -> reqwest::blocking::Client {
    twinflow_pipelines::http::blocking_client(timeout, Some(key)).unwrap()
}

/// A blocking HTTP client of an in-process app, with its admin key.
pub(crate) fn http() -> reqwest::blocking::Client {
    http_with_key(ADMIN_KEY, Duration::from_secs(60))
}

/// A started app writing to `dir`, with a short tick and the feature-hashing
/// embedder (a test double for the model: deterministic, instant; the real
/// encoder's end-to-end test is `minilm.rs`).
pub(crate) fn app(dir: &Path) -> Arc<App> {
    app_with(dir, |_| {})
}

/// [`app`] with changes to its configuration.
pub(crate) fn app_with(dir: &Path, change: impl FnOnce(&mut Config)) -> Arc<App> {
    let mut config = Config::default();
    config.embedder = EmbedderConfig::Hashing(HashingEmbedderConfig::default());
    config.storage.data_dir = dir.to_path_buf();
    config.engine.tick = Duration::from_millis(10);
    config.engine.workers = 2;
    config.auth.keys = test_keys();
    // No LLM writes questions at the start of training runs: tests that judge a
    // run write them with a test double (`QuestionDouble`) first.
    config.training.questions_per_run = 0;
    change(&mut config);
    App::start(config).expect("app starts")
}

/// One NDJSON upsert line.
pub(crate) fn upsert_line(doc_id: &str, title: &str, content: &str) -> String {
    serde_json::json!({
        "op": "upsert", "doc_id": doc_id, "kind": "article", "author": "Grace",
        "title": title, "url": format!("https://example.com/{doc_id}"), "content": content,
    })
    .to_string()
}

/// A paragraph-rich article about `topic`.
pub(crate) fn article(topic: &str, paragraphs: usize) -> String {
    (0..paragraphs)
        .map(|i| {
            format!(
                "Paragraph {i} is about {topic}. The {topic} matters because people rely on {topic} every day. \
                 We discuss {topic} in detail here, with examples number {i} and more words to fill the line."
            )
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Test double of an LLM that writes questions (the real SmolLM2 takes
/// seconds per extract; tests that generate datasets or judge training runs
/// need hundreds). Asked for questions about an extract, it answers with
/// `questions(extract)`; asked a question alone, with `answer`. Samples it
/// writes are named `llm:<name>@p…` in the datasets and model cards. Counts
/// the extracts it was sent.
#[derive(Debug)]
pub(crate) struct QuestionDouble {
    name: &'static str,
    questions: fn(&str) -> String,
    answer: &'static str,
    pub(crate) calls: std::sync::atomic::AtomicUsize,
}

impl QuestionDouble {
    pub(crate) fn new(name: &'static str, questions: fn(&str) -> String, answer: &'static str) -> Self {
        Self { name, questions, answer, calls: Default::default() }
    }

    /// Questions about the extract's three longest words.
    pub(crate) fn keywords() -> Self {
        Self::new(
            "keyword-questions-test-double",
            keyword_questions,
            "That depends on many things, and people have long disagreed about it.",
        )
    }
}

fn keyword_questions(extract: &str) -> String {
    let mut words: Vec<&str> = extract.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    let mut seen = std::collections::HashSet::new();
    words.retain(|w| seen.insert(w.to_lowercase()));
    words.sort_by_key(|w| std::cmp::Reverse(w.chars().count()));
    let at = |i: usize| words.get(i).copied().unwrap_or("this");
    format!(
        "1. What is said about {} and {}?\n2. Why does {} matter here?\n3. How are {} and {} related?",
        at(0),
        at(1),
        at(2),
        at(0),
        at(2)
    )
}

impl twinflow_models::Generator for QuestionDouble {
    fn model_name(&self) -> &str {
        self.name
    }
    fn context_tokens(&self) -> usize {
        8192
    }
    fn count_tokens(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
    fn generate(
        &self,
        messages: &[twinflow_models::ChatMessage],
        _params: &twinflow_models::GenerateParams,
        _on_text: &mut dyn FnMut(&str) -> std::ops::ControlFlow<()>,
    ) -> twinflow_models::Result<twinflow_models::Generation> {
        let text = match messages.last().and_then(|m| m.content.split("\"\"\"").nth(1)) {
            Some(extract) => {
                self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (self.questions)(extract)
            }
            None => self.answer.to_owned(),
        };
        Ok(twinflow_models::Generation {
            text,
            finish_reason: twinflow_models::FinishReason::Stop,
            prompt_tokens: 1,
            completion_tokens: 1,
            prefill_ms: 0.0,
            decode_ms: 0.0,
            cached_tokens: 0,
        })
    }
}

/// The card of an embedding adapter registered by a test as training would
/// register one: trained on `dataset`, judged on nothing, not promotable.
pub(crate) fn adapter_card(
    dim: usize,
    dataset: twinflow_models::DatasetRef,
    decision: &str,
) -> twinflow_models::ModelCard {
    use twinflow_models::{AdapterTraining, Evaluation, ModelCard, TrainingReport};
    ModelCard {
        version: 0,
        kind: "embedding-adapter".into(),
        base_model: "hashing".into(),
        dim,
        created_at_ms: 1,
        parent: None,
        dataset,
        trigger: serde_json::json!("manual"),
        training: AdapterTraining::default(),
        report: TrainingReport {
            pairs: 1,
            steps: 1,
            epoch_losses: vec![1.0],
            seconds: 0.1,
            distance_from_identity: 1.0,
        },
        evaluation: Evaluation {
            k: 10,
            queries: 1,
            corpus: 1,
            base: 0.5,
            parent: 0.5,
            candidate: 0.5,
            evidence: Vec::new(),
            gain: None,
        },
        promotable: false,
        decision: decision.into(),
    }
}

/// A dataset reference of version 1 at epoch 1 with one pair each side.
pub(crate) fn first_dataset() -> twinflow_models::DatasetRef {
    twinflow_models::DatasetRef {
        name: "instruct".into(),
        version: 1,
        epoch: 1,
        content_hash: String::new(),
        train_pairs: 1,
        test_pairs: 1,
    }
}

/// An adapter that keeps the first 8 of `dim` dimensions (so vector scores move).
pub(crate) fn keep_eight(dim: usize) -> twinflow_models::Adapter {
    let weights: Vec<f32> = (0..dim * dim).map(|i| if i / dim == i % dim && i / dim < 8 { 1.0 } else { 0.0 }).collect();
    twinflow_models::Adapter::from_weights(dim, weights).unwrap()
}

/// A retrieval setting to register (BM25 and fusion weights only: the
/// vector ranking weighs 0; no leads), with made-up judged evidence.
pub(crate) fn retrieval_card(bm25_weight: f32, rrf_k: f32) -> twinflow_models::RetrievalCard {
    use twinflow_schemas::stats::Estimate;
    let estimate = Estimate { mean: 0.5, low: 0.4, high: 0.6 };
    twinflow_models::RetrievalCard {
        version: 0,
        created_at_ms: 0,
        vector_weight: 0.0,
        bm25_weight,
        lead_weight: 0.0,
        rrf_k,
        test_queries: 10,
        dev_queries: 10,
        ndcg_at_10: estimate,
        active_ndcg_at_10: estimate,
        gain: Estimate { mean: 0.1, low: 0.05, high: 0.15 },
        parent: None,
        promoted: true,
        decision: "registered by the test".into(),
        dataset: twinflow_schemas::models::DatasetRef {
            name: "test".into(),
            version: 0,
            epoch: 1,
            content_hash: String::new(),
            train_pairs: 10,
            test_pairs: 10,
        },
    }
}
