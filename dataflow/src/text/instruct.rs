//! Instruct: the built-in offline generator of (instruction, output) pairs.
//!
//! Owns the key-phrase extractor, the instruction template, the quality
//! filter and the train/test split. The output of every sample is the
//! author's own text (one chunk); the instruction asks for it by length,
//! title, author, heading and the chunk's most frequent content words. No
//! model is involved, so the same chunk always gives the same sample.

use std::collections::HashMap;

use twinflow_schemas::{ChunkRow, DocumentKind, Hash128, InstructRow, Split};
use unicode_segmentation::UnicodeSegmentation;

/// Name and version of this generator, stored in every sample it writes.
pub const GENERATOR: &str = "offline-v1";

/// Chunks shorter than this many characters give no sample.
pub const MIN_CHARS: usize = 200;

/// Chunks with fewer words than this give no sample.
pub const MIN_WORDS: usize = 20;

/// How many key phrases an instruction names.
const KEY_PHRASES: usize = 3;

/// English function words never used as key phrases (only words of three or
/// more letters are considered at all).
const STOPWORDS: &[&str] = &[
    "about",
    "above",
    "across",
    "after",
    "again",
    "against",
    "all",
    "also",
    "although",
    "among",
    "and",
    "another",
    "any",
    "are",
    "around",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "can",
    "cannot",
    "could",
    "did",
    "does",
    "doing",
    "done",
    "down",
    "during",
    "each",
    "either",
    "else",
    "enough",
    "even",
    "ever",
    "every",
    "few",
    "for",
    "from",
    "further",
    "get",
    "gets",
    "got",
    "had",
    "has",
    "have",
    "having",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "however",
    "into",
    "its",
    "itself",
    "just",
    "let",
    "like",
    "made",
    "make",
    "makes",
    "many",
    "may",
    "might",
    "more",
    "most",
    "much",
    "must",
    "myself",
    "near",
    "neither",
    "never",
    "nor",
    "not",
    "now",
    "off",
    "often",
    "once",
    "one",
    "only",
    "other",
    "others",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "per",
    "quite",
    "rather",
    "really",
    "same",
    "say",
    "says",
    "said",
    "see",
    "seen",
    "shall",
    "she",
    "should",
    "since",
    "some",
    "something",
    "still",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "therefore",
    "these",
    "they",
    "thing",
    "things",
    "this",
    "those",
    "though",
    "through",
    "thus",
    "too",
    "two",
    "under",
    "until",
    "upon",
    "use",
    "used",
    "using",
    "very",
    "was",
    "way",
    "well",
    "were",
    "what",
    "when",
    "where",
    "whether",
    "which",
    "while",
    "who",
    "whom",
    "whose",
    "why",
    "will",
    "with",
    "within",
    "without",
    "would",
    "yet",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// Who wrote the document an extract comes from, and what it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstructSource<'a> {
    /// The document's stable id (decides the split).
    pub doc_id: &'a str,
    /// Its title; left out of the instruction when empty.
    pub title: &'a str,
    /// Its author; left out of the instruction when empty.
    pub author: &'a str,
    /// Its kind; repositories give no offline samples.
    pub kind: DocumentKind,
}

/// Train or test for every sample of a document: test when the document's
/// hash is 0 mod 10 (about one document in ten), so no document is in both.
pub fn split_for(doc_id: &str) -> Split {
    if Hash128::of(doc_id.as_bytes()).low64() % 10 == 0 { Split::Test } else { Split::Train }
}

/// The offline sample of one chunk, or `None` when the chunk fails the
/// quality filter (fewer than [`MIN_CHARS`] characters or [`MIN_WORDS`]
/// words) or comes from a repository.
pub fn offline_instructions(doc: &InstructSource<'_>, chunk: &ChunkRow) -> Option<InstructRow> {
    if doc.kind == DocumentKind::Repository {
        return None;
    }
    let output = chunk.text.as_str();
    let words = output.unicode_words().count();
    if output.chars().count() < MIN_CHARS || words < MIN_WORDS {
        return None;
    }
    let instruction = instruction(doc, output, words);
    Some(InstructRow {
        sample_id: Hash128::of_parts(&[instruction.as_bytes(), output.as_bytes(), doc.doc_id.as_bytes()]),
        instruction,
        output: output.to_owned(),
        doc_id: doc.doc_id.to_owned(),
        chunk_ids: vec![chunk.chunk_id],
        generator: GENERATOR.to_owned(),
        split: split_for(doc.doc_id),
    })
}

/// `Write a passage of about 250 words for "Title" by Author under the
/// heading "Heading" about k1, k2 and k3.` with the empty parts left out.
fn instruction(doc: &InstructSource<'_>, text: &str, words: usize) -> String {
    let noun = if doc.kind == DocumentKind::Post { "post" } else { "passage" };
    let rounded = ((words + 5) / 10 * 10).max(10);
    let mut out = format!("Write a {noun} of about {rounded} words");
    let title = doc.title.trim();
    if !title.is_empty() {
        out.push_str(&format!(" for \"{title}\""));
    }
    let author = doc.author.trim();
    if !author.is_empty() {
        out.push_str(&format!(" by {author}"));
    }
    if let Some(heading) = heading(text) {
        out.push_str(&format!(" under the heading \"{heading}\""));
    }
    let keys = key_phrases(text, KEY_PHRASES);
    if let Some((last, rest)) = keys.split_last() {
        out.push_str(" about ");
        if !rest.is_empty() {
            out.push_str(&rest.join(", "));
            out.push_str(" and ");
        }
        out.push_str(last);
    }
    out.push('.');
    out
}

/// The first line of `text` when it looks like a heading: a paragraph of its
/// own (cleaning puts headings there) followed by more text, at most 80
/// characters and 12 words, not ending like a sentence.
pub fn heading(text: &str) -> Option<&str> {
    let (first, rest) = text.split_once("\n\n")?;
    let first = first.trim();
    let looks_like = !first.is_empty()
        && !first.contains('\n')
        && !rest.trim().is_empty()
        && first.chars().count() <= 80
        && first.split_whitespace().count() <= 12
        && !first.ends_with(['.', '!', '?', ',', ';', ':']);
    looks_like.then_some(first)
}

/// The `n` most frequent content words of `text`: lowercased, at least three
/// letters and nothing else (so no contractions or numbers), not a
/// stopword, a possessive `'s` dropped; ties broken alphabetically.
pub fn key_phrases(text: &str, n: usize) -> Vec<String> {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for word in text.unicode_words() {
        let word = word.to_lowercase();
        let word = word.strip_suffix("'s").or_else(|| word.strip_suffix("’s")).unwrap_or(&word);
        let letters = word.chars().filter(|c| c.is_alphabetic()).count();
        let wordlike = word.chars().all(char::is_alphabetic);
        if letters >= 3 && wordlike && !STOPWORDS.contains(&word) {
            *counts.entry(word.to_owned()).or_default() += 1;
        }
    }
    let mut ranked: Vec<(String, usize)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.into_iter().take(n).map(|(word, _)| word).collect()
}

/// The words of `text` that carry its content, each once, in order of first
/// use: lowercased, a possessive `'s` dropped, a plural's `s` dropped (from
/// four letters, not `ss`), and neither a stopword nor shorter than three
/// characters unless it holds a digit (numbers are facts: "11", "v2").
/// Grounding compares an answer sentence's content words with a passage's.
pub fn content_words(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for word in text.unicode_words() {
        let word = word.to_lowercase();
        let word = word.strip_suffix("'s").or_else(|| word.strip_suffix("’s")).unwrap_or(&word);
        let digits = word.chars().any(|c| c.is_ascii_digit());
        if (word.chars().count() < 3 && !digits) || STOPWORDS.contains(&word) {
            continue;
        }
        let word = match word.strip_suffix('s') {
            Some(stem) if !digits && stem.chars().count() >= 3 && !stem.ends_with('s') => stem,
            _ => word,
        };
        if !out.iter().any(|w| w == word) {
            out.push(word.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests;
