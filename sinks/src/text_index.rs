//! BM25 full-text index over the live chunk texts (tantivy, in memory).
//!
//! One tantivy document per distinct chunk text, keyed by its `chunk_id`
//! (16 bytes, indexed for deletes, a fast field for filtering). The store
//! updates it in the same commit that applies an epoch to the live state, so
//! a search sees the same epoch in both indexes; on open it is rebuilt from
//! the restored chunks (no model needed). Metadata filters arrive as the set
//! of chunk ids whose documents pass, applied by the collector during the
//! search, so `k` is filled when enough chunks match.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use tantivy::collector::{BytesFilterCollector, TopDocs};
use tantivy::query::QueryParser;
use tantivy::schema::{BytesOptions, Field, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use twinflow_schemas::Hash128;

use crate::error::{Error, Result};

/// Memory the index writer may use before it flushes a segment.
const WRITER_HEAP: usize = 64 * 1024 * 1024;

/// The BM25 index of the live chunks.
pub(crate) struct TextIndex {
    /// Reads a query's words (OR-ed, the parser's default) for the `text` field.
    parser: QueryParser,
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
    id: Field,
    text: Field,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex").field("docs", &self.reader.searcher().num_docs()).finish()
    }
}

fn index_error(e: impl std::fmt::Display) -> Error {
    Error::TextIndex(e.to_string())
}

impl TextIndex {
    /// An empty index.
    pub(crate) fn new() -> Result<Self> {
        let mut schema = Schema::builder();
        let id = schema.add_bytes_field("chunk_id", BytesOptions::default().set_indexed().set_fast().set_stored());
        let text = schema.add_text_field("text", TEXT);
        let index = Index::create_in_ram(schema.build());
        let writer = index.writer_with_num_threads(1, WRITER_HEAP).map_err(index_error)?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(index_error)?;
        let parser = QueryParser::for_index(&index, vec![text]);
        Ok(Self { parser, writer: Mutex::new(writer), reader, id, text })
    }

    /// Makes the index hold exactly `present` among the ids it is told about:
    /// every id in `present` is (re)indexed with its text, every id in
    /// `absent` is removed; then commits, so searches see the change.
    pub(crate) fn apply<'a>(
        &self,
        present: impl IntoIterator<Item = (Hash128, &'a str)>,
        absent: impl IntoIterator<Item = Hash128>,
    ) -> Result<()> {
        let mut writer = self.writer.lock();
        let mut changed = false;
        for id in absent {
            writer.delete_term(Term::from_field_bytes(self.id, &id.0.to_be_bytes()));
            changed = true;
        }
        for (id, text) in present {
            let key = id.0.to_be_bytes();
            writer.delete_term(Term::from_field_bytes(self.id, &key));
            let mut doc = TantivyDocument::default();
            doc.add_bytes(self.id, &key[..]);
            doc.add_text(self.text, text);
            writer.add_document(doc).map_err(index_error)?;
            changed = true;
        }
        if changed {
            writer.commit().map_err(index_error)?;
            self.reader.reload().map_err(index_error)?;
        }
        Ok(())
    }

    /// The `k` best chunks for the words of `query` by BM25, best first;
    /// with `allowed`, only those chunk ids. Query syntax errors are not
    /// errors: the query is read leniently, as words.
    pub(crate) fn search(
        &self,
        query: &str,
        k: usize,
        allowed: Option<Arc<HashSet<[u8; 16]>>>,
    ) -> Result<Vec<(Hash128, f32)>> {
        if k == 0 || query.trim().is_empty() {
            return Ok(Vec::new());
        }
        // BM25 ranks chunks with more of the OR-ed words first.
        let (parsed, _) = self.parser.parse_query_lenient(query);
        let searcher = self.reader.searcher();
        let top = TopDocs::with_limit(k);
        let docs = match allowed {
            None => searcher.search(&parsed, &top).map_err(index_error)?,
            Some(allowed) => {
                let filter =
                    BytesFilterCollector::new("chunk_id".to_owned(), move |id: &[u8]| allowed.contains(id), top);
                searcher.search(&parsed, &filter).map_err(index_error)?
            }
        };
        let mut out = Vec::with_capacity(docs.len());
        for (score, address) in docs {
            let doc: TantivyDocument = searcher.doc(address).map_err(index_error)?;
            let Some(bytes) = doc.get_first(self.id).and_then(|v| v.as_bytes()) else { continue };
            let Ok(key) = <[u8; 16]>::try_from(bytes) else { continue };
            out.push((Hash128(u128::from_be_bytes(key)), score));
        }
        Ok(out)
    }

    /// Number of indexed chunks.
    pub(crate) fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Hash128 {
        Hash128(n)
    }

    #[test]
    fn indexes_replaces_and_deletes_by_chunk_id() {
        let index = TextIndex::new().unwrap();
        index.apply([(id(1), "ships sail the harbour"), (id(2), "engines compute numbers")], []).unwrap();
        assert_eq!(index.len(), 2);
        let hits = index.search("harbour ships", 5, None).unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [id(1)]);
        // Re-indexing the same id replaces it; deleting removes it.
        index.apply([(id(1), "ships sail the harbour")], [id(2)]).unwrap();
        assert_eq!(index.len(), 1);
        assert!(index.search("engines", 5, None).unwrap().is_empty());
        // Words more often and in shorter texts rank higher.
        index
            .apply([(id(3), "ships ships ships"), (id(4), "one ship among many other words in a long line")], [])
            .unwrap();
        assert_eq!(index.search("ships", 5, None).unwrap()[0].0, id(3));
    }

    #[test]
    fn filters_apply_inside_the_search_and_bad_syntax_is_words() {
        let index = TextIndex::new().unwrap();
        let texts: Vec<(Hash128, String)> = (0..50).map(|i| (id(i), format!("ships harbour number{i}"))).collect();
        index.apply(texts.iter().map(|(i, t)| (*i, t.as_str())), []).unwrap();
        let allowed: HashSet<[u8; 16]> = [id(42).0.to_be_bytes()].into_iter().collect();
        let hits = index.search("ships", 1, Some(Arc::new(allowed))).unwrap();
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), [id(42)]);
        assert!(!index.search("ships AND (harbour OR", 3, None).unwrap().is_empty());
        assert!(index.search("   ", 3, None).unwrap().is_empty());
    }
}
