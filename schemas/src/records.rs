//! Record types: the input change, and one row type per feature table.
//!
//! Every row derives `Ord` and `Hash` because the dataflow keeps them in
//! differential collections; field order is the sort order.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::Hash128;

/// What a document is, as in the LLM-twin book: the author's articles, social
/// posts and code repositories, plus anything else.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum DocumentKind {
    /// Long-form text: blog posts, essays, speeches.
    Article,
    /// Short social posts.
    Post,
    /// Source code files from a repository.
    Repository,
    /// Anything else.
    #[default]
    Other,
}

impl DocumentKind {
    /// Every kind, in a stable order.
    pub const ALL: [DocumentKind; 4] = [Self::Article, Self::Post, Self::Repository, Self::Other];

    /// The lowercase name used in JSON, Parquet and SQL.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Article => "article",
            Self::Post => "post",
            Self::Repository => "repository",
            Self::Other => "other",
        }
    }
}

impl fmt::Display for DocumentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a kind name that is not one of [`DocumentKind::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown document kind {0:?}: expected article, post, repository or other")]
pub struct UnknownKind(pub String);

impl FromStr for DocumentKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// How the content is written, which decides how it is cleaned. When absent
/// it is inferred: repositories are code, content that looks like HTML is
/// HTML, everything else is Markdown (which plain text also is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ContentFormat {
    /// Plain text: only whitespace and unicode are normalised.
    Text,
    /// Markdown (CommonMark): markup stripped, headings and paragraphs kept.
    Markdown,
    /// HTML: tags, scripts, styles and navigation stripped.
    Html,
    /// Source code: kept verbatim apart from line endings and trailing spaces.
    Code,
}

impl ContentFormat {
    /// The lowercase name used in JSON, Parquet and SQL.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Markdown => "markdown",
            Self::Html => "html",
            Self::Code => "code",
        }
    }
}

impl FromStr for ContentFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Text, Self::Markdown, Self::Html, Self::Code]
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| format!("unknown format {s:?}: expected text, markdown, html or code"))
    }
}

/// One version of a document, as a source delivers it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Document {
    /// Stable identity: a URL or `platform:id`.
    pub doc_id: String,
    /// Article, post, repository or other.
    #[serde(default)]
    pub kind: DocumentKind,
    /// Who wrote it (the twin's author).
    #[serde(default)]
    pub author: String,
    /// Title, if any.
    #[serde(default)]
    pub title: String,
    /// Where it lives.
    #[serde(default)]
    pub url: String,
    /// Which source delivered it (`http`, `watch`, `ndjson`, …).
    #[serde(default)]
    pub source: String,
    /// How the content is written; inferred at ingest when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ContentFormat>,
    /// When it was fetched, milliseconds since the Unix epoch; set at ingest
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<i64>,
    /// The full content of this version.
    pub content: String,
}

impl Document {
    /// Hash of everything that makes this version distinct (content and
    /// metadata, not the fetch time): two upserts with the same version hash
    /// are the same version.
    pub fn version_hash(&self) -> Hash128 {
        let format = self.format.map(|f| f as u8).unwrap_or(u8::MAX);
        Hash128::of_parts(&[
            self.kind.as_str().as_bytes(),
            self.author.as_bytes(),
            self.title.as_bytes(),
            self.url.as_bytes(),
            self.source.as_bytes(),
            &[format],
            self.content.as_bytes(),
        ])
    }
}

/// A change to the document set: a full new version, or a removal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum DocumentChange {
    /// Insert or replace the document with this `doc_id`.
    Upsert(Document),
    /// Remove the document with this `doc_id` (a no-op when absent).
    Delete {
        /// The document to remove.
        doc_id: String,
    },
}

impl DocumentChange {
    /// The document this change is about.
    pub fn doc_id(&self) -> &str {
        match self {
            Self::Upsert(doc) => &doc.doc_id,
            Self::Delete { doc_id } => doc_id,
        }
    }
}

/// A row of the `documents` table: the current version of one document.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocumentRow {
    pub doc_id: String,
    pub kind: DocumentKind,
    pub author: String,
    pub title: String,
    pub url: String,
    pub source: String,
    /// How the content is written (resolved at ingest, never inferred later).
    pub format: ContentFormat,
    /// BLAKE3 of the raw content.
    pub content_hash: Hash128,
    /// The raw content, so the table is the source of truth for restarts
    /// and for datasets.
    pub content: String,
    /// Milliseconds since the Unix epoch.
    pub fetched_at: i64,
    /// The epoch in which this version entered.
    pub version: u64,
}

/// A row of the `chunks` table: one extract of a cleaned document.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkRow {
    /// Hash of `text`: the chunk's identity.
    pub chunk_id: Hash128,
    pub doc_id: String,
    /// Position of the chunk in its document (a value, not part of the key).
    pub ordinal: u32,
    pub text: String,
    /// Start of the chunk in the cleaned text, in characters.
    pub char_start: u32,
    /// End (exclusive) of the chunk in the cleaned text, in characters.
    pub char_end: u32,
    /// Estimated number of model tokens.
    pub token_estimate: u32,
    /// The first and last page (1-based) the chunk's text is on, for a
    /// paged document (a PDF's text layer); `None` for one without pages.
    pub pages: Option<(u32, u32)>,
}

/// An embedding vector. `Ord`/`Eq` compare the bit patterns of the floats so
/// vectors can live in differential collections (NaN never arises from a
/// normalised embedding, and a total order is all the engine needs).
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Vector(pub Vec<f32>);

impl Eq for Vector {}

impl PartialOrd for Vector {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Vector {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let a = self.0.iter().map(|x| x.to_bits());
        let b = other.0.iter().map(|x| x.to_bits());
        a.cmp(b)
    }
}

impl std::hash::Hash for Vector {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for x in &self.0 {
            x.to_bits().hash(state);
        }
    }
}

impl fmt::Debug for Vector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [a, b, c, _, ..] => write!(f, "Vector[{}; {a:.4}, {b:.4}, {c:.4}, …]", self.0.len()),
            short => write!(f, "Vector{short:?}"),
        }
    }
}

/// A row of the `embeddings` table: one vector per (chunk text, model).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EmbeddingRow {
    pub chunk_id: Hash128,
    /// The model that made the vector, including a hash of its weights.
    pub model_id: String,
    pub vector: Vector,
}

/// Train or test; decided by a hash of the `doc_id` so no document is in both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Test,
}

impl Split {
    /// `train` or `test`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Test => "test",
        }
    }
}

/// A row of the `instruct` table: an (instruction, output) pair whose output
/// is the author's own text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstructRow {
    /// Hash of (instruction, output, doc_id).
    pub sample_id: Hash128,
    pub instruction: String,
    pub output: String,
    pub doc_id: String,
    /// The chunks the output was taken from.
    pub chunk_ids: Vec<Hash128>,
    /// Which generator wrote the instruction (name and version).
    pub generator: String,
    pub split: Split,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_json_shape() {
        let json = r#"{"op":"upsert","doc_id":"a","kind":"post","content":"hi"}"#;
        let change: DocumentChange = serde_json::from_str(json).unwrap();
        match &change {
            DocumentChange::Upsert(doc) => {
                assert_eq!(doc.kind, DocumentKind::Post);
                assert_eq!(doc.content, "hi");
                assert_eq!(doc.author, "");
            }
            other => panic!("expected upsert, got {other:?}"),
        }
        let back = serde_json::to_string(&change).unwrap();
        assert_eq!(serde_json::from_str::<DocumentChange>(&back).unwrap(), change);
        let del: DocumentChange = serde_json::from_str(r#"{"op":"delete","doc_id":"a"}"#).unwrap();
        assert_eq!(del.doc_id(), "a");
    }

    #[test]
    fn version_hash_ignores_fetch_time_only() {
        let doc = Document {
            doc_id: "d".into(),
            kind: DocumentKind::Article,
            author: "me".into(),
            title: "t".into(),
            url: String::new(),
            source: String::new(),
            format: None,
            fetched_at: Some(1),
            content: "body".into(),
        };
        let later = Document { fetched_at: Some(2), ..doc.clone() };
        assert_eq!(doc.version_hash(), later.version_hash());
        let edited = Document { content: "body!".into(), ..doc.clone() };
        assert_ne!(doc.version_hash(), edited.version_hash());
    }

    #[test]
    fn vectors_order_totally() {
        let a = Vector(vec![0.0, 1.0]);
        let b = Vector(vec![0.0, 2.0]);
        assert!(a < b);
        assert_eq!(a.cmp(&a.clone()), std::cmp::Ordering::Equal);
    }
}
