//! Work counting: the engine embeds only chunk texts it has not embedded.

use twinflow_schemas::config::ChunkingConfig;
use twinflow_schemas::{DocumentKind, TableName};

use crate::harness::{Harness, delete, prose, upsert};

fn embedded(h: &Harness) -> u64 {
    h.engine.stats().texts_embedded
}

#[test]
fn unchanged_document_embeds_nothing() {
    let mut h = Harness::new(2, ChunkingConfig::default());
    let text = prose(7, 200);
    h.epoch(vec![upsert("a", DocumentKind::Article, "A", &text)]);
    let first = embedded(&h);
    assert!(first > 3, "the article has several chunks, embedded {first}");
    h.epoch(vec![upsert("a", DocumentKind::Article, "A", &text)]);
    assert_eq!(embedded(&h), first, "re-sending an unchanged document embeds nothing");
    assert!(h.last.is_empty(), "and changes no table: {:?}", h.last.len_of(TableName::Documents));
    // The same text under another id: new document and chunk rows, no new vectors.
    h.epoch(vec![upsert("b", DocumentKind::Article, "A", &text)]);
    assert_eq!(embedded(&h), first, "identical chunks across documents are embedded once");
    assert!(!h.last.chunks.is_empty());
}

#[test]
fn one_sentence_edit_in_a_50_chunk_article_embeds_at_most_3_chunks() {
    let mut h = Harness::new(2, ChunkingConfig::default());
    let text = prose(11, 900);
    h.epoch(vec![upsert("long", DocumentKind::Article, "Long", &text)]);
    let chunks = h.state.chunks.len();
    assert!(chunks >= 50, "the article has {chunks} chunks");
    let sentences: Vec<&str> = text.split(". ").collect();
    let mut worst = 0;
    for (n, target) in [5usize, 300, 450, 600, 895].into_iter().enumerate() {
        let edited = text.replacen(sentences[target], &format!("{} indeed", sentences[target]), 1);
        let before = embedded(&h);
        h.epoch(vec![upsert("long", DocumentKind::Article, "Long", &edited)]);
        let cost = embedded(&h) - before;
        worst = worst.max(cost);
        assert!(cost <= 3, "edit {n} (sentence {target}) embedded {cost} chunks");
        assert!(cost >= 1, "an edit changes at least one chunk");
        // Undo: every chunk text is cached, so nothing is embedded.
        let before = embedded(&h);
        h.epoch(vec![upsert("long", DocumentKind::Article, "Long", &text)]);
        assert_eq!(embedded(&h), before, "undoing an edit re-uses cached vectors");
    }
    eprintln!("worst edit embedded {worst} chunks of {chunks}");
}

#[test]
fn delete_removes_everything_derived() {
    let mut h = Harness::new(3, ChunkingConfig::default());
    h.epoch(vec![
        upsert("keep", DocumentKind::Article, "Keep", &prose(1, 80)),
        upsert("gone", DocumentKind::Post, "Gone", &prose(2, 80)),
    ]);
    assert!(h.state.chunks.iter().any(|(c, _)| c.doc_id == "gone"));
    assert!(h.state.instruct.iter().any(|(s, _)| s.doc_id == "gone"));
    let gone_chunks: Vec<_> =
        h.state.chunks.iter().filter(|(c, _)| c.doc_id == "gone").map(|(c, _)| c.chunk_id).collect();
    h.epoch(vec![delete("gone")]);
    assert!(h.state.documents.iter().all(|(d, _)| d.doc_id == "keep"));
    assert!(h.state.chunks.iter().all(|(c, _)| c.doc_id == "keep"));
    assert!(h.state.instruct.iter().all(|(s, _)| s.doc_id == "keep"));
    assert!(h.state.embeddings.iter().all(|(e, _)| !gone_chunks.contains(&e.chunk_id)));
    assert!(!h.state.embeddings.is_empty());
    assert_eq!(h.state.documents.len(), 1);
}

/// A test double of a model that fails: every call with a text containing
/// `POISON` fails, and the first call with a text containing `FLAKY` fails
/// once (a transient error); otherwise the hashing embedder answers.
#[derive(Debug)]
struct FailingEmbedder {
    inner: twinflow_dataflow::HashingEmbedder,
    flaked: std::sync::atomic::AtomicBool,
}

impl twinflow_dataflow::Embedder for FailingEmbedder {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, twinflow_dataflow::EmbedError> {
        if texts.iter().any(|t| t.contains("POISON")) {
            return Err(twinflow_dataflow::EmbedError("the model refused this text".into()));
        }
        if texts.iter().any(|t| t.contains("FLAKY")) && !self.flaked.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(twinflow_dataflow::EmbedError("connection reset".into()));
        }
        self.inner.embed_batch(texts)
    }
}

#[test]
fn a_text_the_model_fails_on_gets_no_vector_and_is_reported() {
    let embedder = FailingEmbedder {
        inner: twinflow_dataflow::HashingEmbedder::new(32),
        flaked: std::sync::atomic::AtomicBool::new(false),
    };
    let mut h = Harness::with_embedder(2, ChunkingConfig::default(), std::sync::Arc::new(embedder));
    h.epoch(vec![
        upsert("good", DocumentKind::Post, "Good", "Plain words about rivers and their banks."),
        upsert("bad", DocumentKind::Post, "Bad", "POISON in a text the model will not take."),
        upsert("flaky", DocumentKind::Post, "Flaky", "FLAKY network, then fine on the retry."),
    ]);
    let chunk_of =
        |h: &Harness, doc: &str| h.state.chunks.iter().find(|(c, _)| c.doc_id == doc).map(|(c, _)| c.chunk_id);
    let bad = chunk_of(&h, "bad").expect("the chunk row is there");
    let vectors: Vec<_> = h.state.embeddings.iter().map(|(e, _)| e.chunk_id).collect();
    assert!(!vectors.contains(&bad), "no made-up vector for the failed text");
    assert!(vectors.contains(&chunk_of(&h, "good").unwrap()));
    assert!(vectors.contains(&chunk_of(&h, "flaky").unwrap()), "a transient failure is retried");
    assert!(h.state.embeddings.iter().all(|(e, _)| e.vector.0.iter().any(|x| *x != 0.0)));
    let failures = h.engine.take_embed_failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].chunk_id, bad);
    assert!(failures[0].reason.contains("refused"), "{failures:?}");
    assert_eq!(h.engine.stats().embed_failures, 1);
    // Deleting it retracts the rows it has and nothing else (no negative counts: checked by the harness).
    h.epoch(vec![delete("bad")]);
    assert!(h.last.embeddings.is_empty(), "nothing to retract for a text that never got a vector");
    assert!(chunk_of(&h, "bad").is_none());
    assert!(h.engine.take_embed_failures().is_empty());
}
