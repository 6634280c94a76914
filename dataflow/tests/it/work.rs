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
