//! What one document version turns into: its chunks and instruct samples.
//!
//! The dataflow applies [`derive_features`] to every document change and
//! differential dataflow turns the before/after difference into table
//! updates; the reference implementation applies it to every live document
//! from scratch. Sharing this function is deliberate: the oracle tests check
//! the incremental machinery, while `text/` tests check the functions.

use twinflow_schemas::config::ChunkingConfig;
use twinflow_schemas::{ChunkRow, Document, DocumentChange, DocumentRow, Hash128, InstructRow};

use crate::embed::Embedder;
use crate::text;

/// One derived row of a document.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum Derived {
    /// A chunk, and the title context its vector is computed with (see
    /// [`Derived::passage`]).
    Chunk(ChunkRow, Option<String>),
    Instruct(InstructRow),
}

impl Derived {
    /// What a chunk's vector is computed from: `(chunk_id, passage)`.
    pub fn passage(chunk: &ChunkRow, context: Option<&str>) -> (Hash128, String) {
        (chunk.chunk_id, text::passage(context, &chunk.text))
    }
}

/// Cleans, chunks and writes instruct samples for one document version.
///
/// Chunks are cut by characters (`chunking`), then any chunk longer than the
/// embedder's [`max_tokens`](Embedder::max_tokens), counted by its own
/// tokenizer, less what the title context takes (`chunking.title_context`),
/// is split until it fits: no passage is silently truncated by the model.
/// Each chunk's `token_estimate` is the embedder's count of its text.
pub fn derive_features(doc: &DocumentRow, chunking: &ChunkingConfig, embedder: &dyn Embedder) -> Vec<Derived> {
    let cleaned = text::clean_paged(&doc.content, doc.format);
    let spec = chunking.for_kind(doc.kind);
    let source = text::InstructSource { doc_id: &doc.doc_id, title: &doc.title, author: &doc.author, kind: doc.kind };
    let count = |t: &str| embedder.count_tokens(t);
    let max_tokens = embedder.max_tokens().unwrap_or(usize::MAX);
    let context = chunking.title_context.then(|| text::title_context(&doc.title, max_tokens, &count)).flatten();
    // The context's tokens and the blank line's, counted as the model will see them.
    let budget = match &context {
        Some(context) => max_tokens.saturating_sub(count(&text::passage(Some(context), "")).max(1)),
        None => max_tokens,
    };
    let pieces = text::fit_tokens(text::chunk(&cleaned.text, doc.kind, spec), budget, &count);
    let mut out = Vec::new();
    for (ordinal, piece) in pieces.into_iter().enumerate() {
        let row = ChunkRow {
            chunk_id: text::chunk_id(&text::passage(context.as_deref(), &piece.text)),
            doc_id: doc.doc_id.clone(),
            ordinal: ordinal as u32,
            text: piece.text,
            char_start: piece.char_start,
            char_end: piece.char_end,
            token_estimate: piece.token_estimate,
            pages: cleaned.pages_of(piece.char_start, piece.char_end),
        };
        if let Some(sample) = text::offline_instructions(&source, &row) {
            out.push(Derived::Instruct(sample));
        }
        out.push(Derived::Chunk(row, context.clone()));
    }
    out
}

/// The `documents` row of a new document version entering at `epoch`.
/// `fetched_at` must already be set (ingest sets it when a source did not).
pub fn document_row(doc: &Document, epoch: u64) -> DocumentRow {
    DocumentRow {
        doc_id: doc.doc_id.clone(),
        kind: doc.kind,
        author: doc.author.clone(),
        title: doc.title.clone(),
        url: doc.url.clone(),
        source: doc.source.clone(),
        format: text::infer_format(doc),
        content_hash: Hash128::of(doc.content.as_bytes()),
        content: doc.content.clone(),
        fetched_at: doc.fetched_at.unwrap_or_default(),
        version: epoch,
    }
}

/// True when `a` and `b` are the same version of a document (everything but
/// the fetch time and the epoch it entered): upserting it again is a no-op.
pub fn same_version(a: &DocumentRow, b: &DocumentRow) -> bool {
    a.doc_id == b.doc_id
        && a.content_hash == b.content_hash
        && a.kind == b.kind
        && a.format == b.format
        && a.author == b.author
        && a.title == b.title
        && a.url == b.url
        && a.source == b.source
}

/// Applies one change to a document map with the engine's semantics: an
/// upsert of the current version is a no-op (the row keeps its version), any
/// other upsert replaces the row with one entering at `epoch`, a delete
/// removes it.
pub fn apply_change(docs: &mut std::collections::HashMap<String, DocumentRow>, change: &DocumentChange, epoch: u64) {
    match change {
        DocumentChange::Upsert(doc) => {
            let row = document_row(doc, epoch);
            match docs.get(&doc.doc_id) {
                Some(current) if same_version(current, &row) => {}
                _ => {
                    docs.insert(doc.doc_id.clone(), row);
                }
            }
        }
        DocumentChange::Delete { doc_id } => {
            docs.remove(doc_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use twinflow_schemas::config::ChunkSpec;
    use twinflow_schemas::{ContentFormat, DocumentKind};

    use super::*;
    use crate::embed::HashingEmbedder;

    #[test]
    fn chunks_of_a_paged_document_know_their_pages() {
        // Three pages of four paragraphs (the second page empty), as a PDF's text layer reads.
        let page = |n: usize| {
            (0..4)
                .map(|p| format!("Page {n} paragraph {p} says something long enough to matter here."))
                .collect::<Vec<_>>()
        };
        let content = [page(1).join("\n\n"), String::new(), page(3).join("\n\n")].join("\n\n\u{c}\n\n");
        let doc = Document {
            doc_id: "file:report.pdf".into(),
            kind: DocumentKind::Article,
            author: String::new(),
            title: "Report".into(),
            url: String::new(),
            source: String::new(),
            format: Some(ContentFormat::Markdown),
            fetched_at: Some(0),
            content,
        };
        let spec = ChunkSpec { min_chars: 100, max_chars: 200, boundary_one_in: 1 };
        let chunking = ChunkingConfig { article: spec, ..ChunkingConfig::default() };
        let chunks: Vec<ChunkRow> = derive_features(&document_row(&doc, 1), &chunking, &HashingEmbedder::new(8))
            .into_iter()
            .filter_map(|d| match d {
                Derived::Chunk(row, _) => Some(row),
                Derived::Instruct(_) => None,
            })
            .collect();
        assert!(chunks.len() >= 3, "{chunks:?}");
        for chunk in &chunks {
            let on = |n: u32| chunk.text.contains(&format!("Page {n} "));
            let (first, last) = chunk.pages.expect("a paged document's chunks have pages");
            assert!(first <= last && first != 2 && last != 2, "the empty page holds nothing: {chunk:?}");
            assert!(on(first) && on(last) && (first..=last).all(|p| p == 2 || on(p)), "{chunk:?}");
            assert!(!chunk.text.contains('\u{c}'), "the break is not text");
        }
        assert_eq!(chunks.first().unwrap().pages.unwrap().0, 1);
        assert_eq!(chunks.last().unwrap().pages.unwrap().1, 3);

        let plain = Document { content: page(1).join("\n\n"), ..doc };
        let rows = derive_features(&document_row(&plain, 1), &chunking, &HashingEmbedder::new(8));
        assert!(rows.iter().all(|d| !matches!(d, Derived::Chunk(row, _) if row.pages.is_some())));
    }
}
