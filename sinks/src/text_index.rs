//! BM25 full-text index over the live chunk texts (tantivy, in memory),
//! split into shards by `chunk_id`.
//!
//! One tantivy document per distinct chunk text, keyed by its `chunk_id`
//! (16 bytes, indexed for deletes, a fast field for filtering), in the shard
//! [`crate::shards::shard_of`] names. The store updates it in the same commit
//! that applies an epoch to the live state, so a search sees the same epoch in
//! both indexes; on open it is rebuilt from the restored chunks (no model
//! needed). Metadata filters arrive as the set of chunk ids whose documents
//! pass, applied by the collector during the search, so `k` is filled when
//! enough chunks match.
//!
//! A search asks every shard for its `k` best and merges them (score, then
//! `chunk_id`). Every shard scores with the statistics of the whole live
//! corpus ([`LiveStats`]): the number of live chunks, their total length,
//! and each word's number of live chunks. Tantivy's own statistics count
//! deleted documents until a merge drops them, so they would depend on how
//! the index was built; these depend only on what is live, so the scores are
//! the same whatever the number of shards and whatever the history.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use tantivy::collector::{BytesFilterCollector, TopDocs};
use tantivy::query::{Bm25StatisticsProvider, QueryParser};
use tantivy::schema::{BytesOptions, Field, IndexRecordOption, Schema, TEXT, Value};
use tantivy::tokenizer::TokenStream;
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, SegmentReader, TERMINATED, TantivyDocument, Term,
};

use twinflow_schemas::Hash128;

use crate::error::{Error, Result};
use crate::shards::{fan_out, shard_of};

/// Memory all the shards' writers may use before they flush a segment.
const WRITER_HEAP: usize = 64 * 1024 * 1024;
/// The least a tantivy writer accepts.
const MIN_WRITER_HEAP: usize = 15 * 1024 * 1024;
/// Words whose live document frequency is kept per commit, at most.
const MAX_CACHED_TERMS: usize = 100_000;
/// BM25 scores are rounded to this (relative) step before they are compared.
const SCORE_STEP: f32 = 1e-5;

/// `score` rounded to [`SCORE_STEP`] of its magnitude (monotone: a better
/// score never rounds below a worse one).
fn round_score(score: f32) -> f32 {
    if score == 0.0 || !score.is_finite() {
        return score;
    }
    let step = SCORE_STEP * 2f32.powi(score.abs().log2().floor() as i32);
    (score / step).round() * step
}

/// tantivy's BM25 parameters.
const K1: f32 = 1.2;
const B: f32 = 0.75;

/// A query as BM25 weighs it ([`crate::Store::bm25_query`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bm25Query {
    /// Each word with its idf (repeated as the query repeats it).
    pub words: Vec<(String, f32)>,
    /// The mean length of a live chunk, in words.
    pub avg_len: f32,
}

impl Bm25Query {
    /// The BM25 score of a chunk of `len` words with these word `counts`
    /// (`Σ idf · (k1 + 1) · tf / (tf + k1 · (1 − b + b · len / avg_len))`).
    /// The index stores lengths rounded down (by at most an eighth), so its
    /// own score of the chunk can be higher by up to about a tenth.
    pub fn estimate(&self, counts: &HashMap<String, u32>, len: u32) -> f32 {
        let norm = K1 * (1.0 - B + B * len as f32 / self.avg_len.max(f32::MIN_POSITIVE));
        self.words
            .iter()
            .filter_map(|(word, idf)| counts.get(word).map(|tf| (*tf as f32, idf)))
            .map(|(tf, idf)| idf * (K1 + 1.0) * tf / (tf + norm))
            .sum()
    }
}

/// One shard: its writer and reader.
struct Shard {
    writer: Mutex<IndexWriter>,
    reader: IndexReader,
}

/// The BM25 index of the live chunks.
pub(crate) struct TextIndex {
    /// Reads a query's words (OR-ed, the parser's default) for the `text` field.
    parser: QueryParser,
    shards: Vec<Shard>,
    id: Field,
    text: Field,
    /// Splits texts into words as the `text` field does.
    analyzer: tantivy::tokenizer::TextAnalyzer,
    /// The live corpus's size and length for the shards' current searchers
    /// (by generation), and the live document frequencies asked so far:
    /// computed once per commit, not per query.
    totals: Mutex<Option<Totals>>,
}

/// See [`TextIndex::totals`].
struct Totals {
    generations: Vec<u64>,
    docs: u64,
    tokens: u64,
    doc_freqs: Arc<Mutex<std::collections::HashMap<Term, u64>>>,
}

impl std::fmt::Debug for TextIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextIndex").field("shards", &self.shards.len()).field("docs", &self.len()).finish()
    }
}

fn index_error(e: impl std::fmt::Display) -> Error {
    Error::TextIndex(e.to_string())
}

impl TextIndex {
    /// An empty index of one shard.
    #[cfg(test)]
    pub(crate) fn new() -> Result<Self> {
        Self::with_shards(1)
    }

    /// An empty index of `shards` shards (at least one).
    pub(crate) fn with_shards(shards: usize) -> Result<Self> {
        let mut schema = Schema::builder();
        let id = schema.add_bytes_field("chunk_id", BytesOptions::default().set_indexed().set_fast().set_stored());
        let text = schema.add_text_field("text", TEXT);
        let schema = schema.build();
        let heap = (WRITER_HEAP / shards.max(1)).max(MIN_WRITER_HEAP);
        let mut parser = None;
        let mut analyzer = None;
        let shards = (0..shards.max(1))
            .map(|_| {
                let index = Index::create_in_ram(schema.clone());
                let writer = index.writer_with_num_threads(1, heap).map_err(index_error)?;
                let reader =
                    index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(index_error)?;
                parser.get_or_insert_with(|| QueryParser::for_index(&index, vec![text]));
                if analyzer.is_none() {
                    analyzer = Some(index.tokenizer_for_field(text).map_err(index_error)?);
                }
                Ok(Shard { writer: Mutex::new(writer), reader })
            })
            .collect::<Result<Vec<_>>>()?;
        let parser = parser.expect("at least one shard");
        let analyzer = analyzer.expect("at least one shard");
        Ok(Self { parser, analyzer, shards, id, text, totals: Mutex::new(None) })
    }

    /// Makes the index hold exactly `present` among the ids it is told about:
    /// every id in `present` is (re)indexed with its text, every id in
    /// `absent` is removed; then commits the shards that changed (in
    /// parallel when several did), so searches see the change.
    pub(crate) fn apply<'a>(
        &self,
        present: impl IntoIterator<Item = (Hash128, &'a str)>,
        absent: impl IntoIterator<Item = Hash128>,
    ) -> Result<()> {
        let n = self.shards.len();
        let mut work: Vec<(Vec<Hash128>, Vec<(Hash128, &str)>)> = (0..n).map(|_| Default::default()).collect();
        for id in absent {
            work[shard_of(&id, n)].0.push(id);
        }
        for (id, text) in present {
            work[shard_of(&id, n)].1.push((id, text));
        }
        let ops: usize = work.iter().map(|(a, p)| a.len() + p.len()).sum();
        let jobs: Vec<_> = self.shards.iter().zip(work).filter(|(_, (a, p))| !a.is_empty() || !p.is_empty()).collect();
        fan_out(&jobs, ops >= 512, |(shard, (absent, present))| self.apply_to(shard, absent, present))
            .into_iter()
            .collect::<Result<Vec<()>>>()?;
        Ok(())
    }

    fn apply_to(&self, shard: &Shard, absent: &[Hash128], present: &[(Hash128, &str)]) -> Result<()> {
        let mut writer = shard.writer.lock();
        for id in absent {
            writer.delete_term(Term::from_field_bytes(self.id, &id.0.to_be_bytes()));
        }
        for (id, text) in present {
            let key = id.0.to_be_bytes();
            writer.delete_term(Term::from_field_bytes(self.id, &key));
            let mut doc = TantivyDocument::default();
            doc.add_bytes(self.id, &key[..]);
            doc.add_text(self.text, *text);
            writer.add_document(doc).map_err(index_error)?;
        }
        writer.commit().map_err(index_error)?;
        shard.reader.reload().map_err(index_error)
    }

    /// The `k` best chunks for the words of `query` by BM25, best first (ties
    /// by `chunk_id`); with `allowed`, only those chunk ids. Query syntax
    /// errors are not errors: the query is read leniently, as words.
    ///
    /// Scores are rounded to [`SCORE_STEP`], so that sums of the same terms
    /// added in another order (shards, segments) mostly tie exactly; a shard
    /// whose last hit ties with the `k`-th overall is asked again for more
    /// (up to `max(8(k+1), 128)`), so tied chunks take part in the tie-break
    /// whatever the sharding.
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
        let searchers: Vec<Searcher> = self.shards.iter().map(|s| s.reader.searcher()).collect();
        let stats = self.live_stats(&searchers)?;
        let one = |searcher: &Searcher, limit: usize| -> Result<Vec<(Hash128, f32)>> {
            let top = TopDocs::with_limit(limit);
            let docs = match &allowed {
                None => searcher.search_with_statistics_provider(&parsed, &top, &stats),
                Some(allowed) => {
                    let allowed = allowed.clone();
                    let filter =
                        BytesFilterCollector::new("chunk_id".to_owned(), move |id: &[u8]| allowed.contains(id), top);
                    searcher.search_with_statistics_provider(&parsed, &filter, &stats)
                }
            }
            .map_err(index_error)?;
            let mut out = Vec::with_capacity(docs.len());
            for (score, address) in docs {
                let doc: TantivyDocument = searcher.doc(address).map_err(index_error)?;
                let Some(bytes) = doc.get_first(self.id).and_then(|v| v.as_bytes()) else { continue };
                let Ok(key) = <[u8; 16]>::try_from(bytes) else { continue };
                out.push((Hash128(u128::from_be_bytes(key)), round_score(score)));
            }
            Ok(out)
        };
        let parallel = stats.docs >= crate::shards::PARALLEL_FROM as u64;
        let mut found: Vec<(usize, Vec<(Hash128, f32)>)> = Vec::with_capacity(searchers.len());
        // One more than k from each: a tie at the k-th place shows as a tie with the next.
        for hits in fan_out(&searchers, parallel, |searcher| one(searcher, k + 1)) {
            found.push((k + 1, hits?));
        }
        let order = |a: &(Hash128, f32), b: &(Hash128, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let merged = |found: &[(usize, Vec<(Hash128, f32)>)]| {
            let mut hits: Vec<(Hash128, f32)> = found.iter().flat_map(|(_, h)| h.iter().copied()).collect();
            hits.sort_unstable_by(order);
            hits
        };
        let mut hits = merged(&found);
        if hits.len() > k && hits[k].1 >= hits[k - 1].1 {
            let boundary = hits[k - 1].1;
            let most = (8 * (k + 1)).max(128);
            for (searcher, (limit, shard_hits)) in searchers.iter().zip(&mut found) {
                // Full, and its last hit ties with the boundary: it may hold more tied chunks
                // (up to `most`: past it, a tie that wide is broken by the shards' own order).
                while *limit < most && shard_hits.len() == *limit && shard_hits.last().is_some_and(|h| h.1 >= boundary)
                {
                    *limit = (*limit * 2).min(most);
                    *shard_hits = one(searcher, *limit)?;
                }
            }
            hits = merged(&found);
        }
        hits.truncate(k);
        Ok(hits)
    }

    /// The statistics of the live corpus for these searchers.
    fn live_stats<'a>(&self, searchers: &'a [Searcher]) -> Result<LiveStats<'a>> {
        let generations: Vec<u64> = searchers.iter().map(|s| s.generation().generation_id()).collect();
        let mut totals = self.totals.lock();
        if let Some(t) = &*totals
            && t.generations == generations
        {
            return Ok(LiveStats { searchers, docs: t.docs, tokens: t.tokens, doc_freqs: t.doc_freqs.clone() });
        }
        let (mut docs, mut tokens) = (0u64, 0u64);
        for segment in searchers.iter().flat_map(|s| s.segment_readers()) {
            let norms = segment.get_fieldnorms_reader(self.text).map_err(index_error)?;
            for doc in segment.doc_ids_alive() {
                docs += 1;
                tokens += u64::from(norms.fieldnorm(doc));
            }
        }
        let doc_freqs = Arc::new(Mutex::new(std::collections::HashMap::new()));
        *totals = Some(Totals { generations, docs, tokens, doc_freqs: doc_freqs.clone() });
        Ok(LiveStats { searchers, docs, tokens, doc_freqs })
    }

    /// `query` as BM25 weighs it now: each of the parser's words (repeated
    /// as often as the query repeats them) with its idf, and the mean chunk
    /// length, from the live statistics.
    pub(crate) fn bm25_query(&self, query: &str) -> Result<Bm25Query> {
        let (parsed, _) = self.parser.parse_query_lenient(query);
        let mut terms: Vec<Term> = Vec::new();
        parsed.query_terms(&mut |term, _| terms.push(term.clone()));
        let searchers: Vec<Searcher> = self.shards.iter().map(|s| s.reader.searcher()).collect();
        let stats = self.live_stats(&searchers)?;
        let docs = stats.docs as f32;
        let words = terms
            .into_iter()
            .filter_map(|term| term.value().as_str().map(str::to_owned).map(|word| (word, term)))
            .map(|(word, term)| {
                let df = stats.doc_freq(&term).map_err(index_error)? as f32;
                Ok((word, (1.0 + (docs - df + 0.5) / (df + 0.5)).ln().max(0.0)))
            })
            .collect::<Result<Vec<_>>>()?;
        let avg_len = if stats.docs == 0 { 1.0 } else { stats.tokens as f32 / docs };
        Ok(Bm25Query { words, avg_len })
    }

    /// The words of `text` as the index reads them, each with its count, and their total.
    pub(crate) fn word_counts(&self, text: &str) -> (HashMap<String, u32>, u32) {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut counts: HashMap<String, u32> = HashMap::new();
        let mut len = 0;
        while let Some(token) = stream.next() {
            *counts.entry(token.text.clone()).or_default() += 1;
            len += 1;
        }
        (counts, len)
    }

    /// Number of indexed chunks.
    pub(crate) fn len(&self) -> u64 {
        self.shards.iter().map(|s| s.reader.searcher().num_docs()).sum()
    }
}

/// BM25's corpus statistics over every shard, counting live chunks only:
/// their number, their total length (of the text field, the only one
/// scored), and per word the live chunks holding it.
struct LiveStats<'a> {
    searchers: &'a [Searcher],
    docs: u64,
    tokens: u64,
    /// Per word, shared by the searches of one commit.
    doc_freqs: Arc<Mutex<std::collections::HashMap<Term, u64>>>,
}

impl Bm25StatisticsProvider for LiveStats<'_> {
    fn total_num_tokens(&self, _field: Field) -> tantivy::Result<u64> {
        Ok(self.tokens)
    }

    fn total_num_docs(&self) -> tantivy::Result<u64> {
        Ok(self.docs)
    }

    fn doc_freq(&self, term: &Term) -> tantivy::Result<u64> {
        if let Some(n) = self.doc_freqs.lock().get(term) {
            return Ok(*n);
        }
        let mut n = 0;
        for segment in self.searchers.iter().flat_map(|s| s.segment_readers()) {
            n += live_doc_freq(segment, term)?;
        }
        let mut cached = self.doc_freqs.lock();
        if cached.len() >= MAX_CACHED_TERMS {
            cached.clear();
        }
        cached.insert(term.clone(), n);
        Ok(n)
    }
}

/// Live documents of `segment` holding `term` (the term dictionary's count
/// includes deleted documents until a merge).
fn live_doc_freq(segment: &SegmentReader, term: &Term) -> tantivy::Result<u64> {
    let index = segment.inverted_index(term.field())?;
    let Some(alive) = segment.alive_bitset() else { return Ok(u64::from(index.doc_freq(term)?)) };
    let Some(mut postings) = index.read_postings(term, IndexRecordOption::Basic)? else { return Ok(0) };
    let mut n = 0;
    let mut doc = postings.doc();
    while doc != TERMINATED {
        n += u64::from(alive.is_alive(doc));
        doc = postings.advance();
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> Hash128 {
        Hash128(n)
    }

    #[test]
    fn estimates_are_the_index_scores_up_to_length_rounding() {
        let index = TextIndex::new().unwrap();
        let long = "the railroad ".repeat(60) + "strike";
        let texts = [
            "the railroad strike of the railroad workers",
            "railroad railroad railroad",
            "a strike",
            "harbour fees and cranes",
            "The Railroad, the strike; the end.",
            long.as_str(),
        ];
        index.apply(texts.iter().enumerate().map(|(i, t)| (id(i as u128), *t)), []).unwrap();
        let query = index.bm25_query("railroad strike the").unwrap();
        let words: Vec<&str> = query.words.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(words, ["railroad", "strike", "the"]);
        let hits = index.search("railroad strike the", 10, None).unwrap();
        assert_eq!(hits.len(), 5, "every chunk with one of the words");
        for (chunk, score) in hits {
            let (counts, len) = index.word_counts(texts[chunk.0 as usize]);
            let estimate = query.estimate(&counts, len);
            assert!(estimate <= score * 1.0001 && score <= estimate * 1.12, "{chunk:?}: {estimate} against {score}");
        }
        let (counts, len) = index.word_counts(texts[3]);
        assert_eq!((query.estimate(&counts, len), len), (0.0, 4));
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

    #[test]
    fn scores_do_not_depend_on_shards_or_deletion_history() {
        let texts: Vec<(Hash128, String)> = (0..300u128)
            .map(|i| (id(i * 7919 + 13), format!("ships harbour w{} w{} lantern{}", i % 17, i % 5, i % 3)))
            .collect();
        let gone: Vec<Hash128> = texts.iter().step_by(4).map(|(i, _)| *i).collect();
        let answers: Vec<Vec<(Hash128, f32)>> = [1, 3, 8]
            .into_iter()
            .map(|shards| {
                let index = TextIndex::with_shards(shards).unwrap();
                // In several commits, with deletes (left in the segments) ...
                for batch in texts.chunks(50) {
                    index.apply(batch.iter().map(|(i, t)| (*i, t.as_str())), []).unwrap();
                }
                index.apply([], gone.iter().copied()).unwrap();
                assert_eq!(index.len(), 300 - gone.len() as u64);
                index.search("harbour w3 lantern1", 20, None).unwrap()
            })
            .collect();
        // ... against one commit of only the live texts.
        let fresh = TextIndex::with_shards(1).unwrap();
        fresh.apply(texts.iter().filter(|(i, _)| !gone.contains(i)).map(|(i, t)| (*i, t.as_str())), []).unwrap();
        let expected = fresh.search("harbour w3 lantern1", 20, None).unwrap();
        assert_eq!(expected.len(), 20);
        for answer in &answers {
            assert_eq!(
                answer.iter().map(|h| h.0).collect::<Vec<_>>(),
                expected.iter().map(|h| h.0).collect::<Vec<_>>()
            );
            for (a, b) in answer.iter().zip(&expected) {
                assert!((a.1 - b.1).abs() < 1e-5, "{a:?} {b:?}");
            }
        }
    }
}
