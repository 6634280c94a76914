//! `[chunking]`: chunk sizes per kind of document, and what each chunk's
//! vector is computed from.

use serde::{Deserialize, Serialize};

use crate::records::DocumentKind;

/// Chunk sizes per kind of document, as in the LLM-twin book.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkingConfig {
    /// Articles: sentence-packed 1000–2000 characters.
    pub article: ChunkSpec,
    /// Posts: about 250 tokens.
    pub post: ChunkSpec,
    /// Code: about 1500 tokens, cut at blank lines and top-level items.
    pub repository: ChunkSpec,
    /// Everything else: as articles.
    pub other: ChunkSpec,
    /// Embed each chunk as its document's title, a blank line, then the
    /// chunk's text, so a passage that never names its subject is still
    /// found by it. The title is part of the chunk's identity (`chunk_id` is
    /// the hash of the embedded passage): a retitled document re-embeds its
    /// chunks. Fixed per data directory (recorded at the first start).
    pub title_context: bool,
}

impl ChunkingConfig {
    /// The spec for one kind of document.
    pub fn for_kind(&self, kind: DocumentKind) -> &ChunkSpec {
        match kind {
            DocumentKind::Article => &self.article,
            DocumentKind::Post => &self.post,
            DocumentKind::Repository => &self.repository,
            DocumentKind::Other => &self.other,
        }
    }
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        let article = ChunkSpec { min_chars: 1000, max_chars: 2000, boundary_one_in: 4 };
        Self {
            article: article.clone(),
            post: ChunkSpec { min_chars: 700, max_chars: 1200, boundary_one_in: 3 },
            repository: ChunkSpec { min_chars: 4000, max_chars: 7000, boundary_one_in: 4 },
            other: article,
            title_context: true,
        }
    }
}

/// Sizes of one kind's chunks. Every unit (sentence, or line for code) gets
/// a score from its content: paragraph ends (top-level items for code) rank
/// highest, then units whose hash picks them (one in `boundary_one_in`),
/// then the rest. A unit is a cut when it outscores every unit within
/// `min_chars` of it, so cuts are at least `min_chars` apart and depend only
/// on nearby text: an edit moves only the cuts around it. Stretches longer
/// than `max_chars` are split at their best units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChunkSpec {
    pub min_chars: usize,
    pub max_chars: usize,
    pub boundary_one_in: u32,
}

impl Default for ChunkSpec {
    fn default() -> Self {
        ChunkingConfig::default().article
    }
}
