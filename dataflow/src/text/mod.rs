//! The pure text functions of the dataflow: no state, no I/O, deterministic,
//! never panicking on any input. The operators call them; they are tested
//! here on their own.
//!
//! ```text
//!  Document ─ clean ─▶ String ─ chunk ─▶ Vec<Chunk> ─▶ ChunkRow (id = chunk_id(passage(title, text)))
//!  (format per doc)    (paragraphs      (cuts chosen          │
//!                       "\n\n")          by content)          └─ offline_instructions ─▶ InstructRow
//! ```
//!
//! | file | what it owns |
//! |---|---|
//! | `clean.rs` | format inference, HTML/Markdown stripping, normalisation, boilerplate lines |
//! | `chunk.rs` | sentence/line units, the content-defined cut rule, title context and chunk ids, token estimate |
//! | `instruct.rs` | the offline instruct generator, key phrases, quality filter, train/test split |
//! | `*/tests.rs` | each file's unit tests (chunk's include the locality measurements) |

pub mod chunk;
pub mod clean;
pub mod dataset;
pub mod instruct;

pub use chunk::{Chunk, chunk, chunk_id, fit_tokens, passage, title_context, token_estimate};
pub use clean::{Cleaned, PAGE_BREAK, clean, clean_as, clean_paged, infer_format};
pub use instruct::{GENERATOR, InstructSource, content_words, key_phrases, offline_instructions, split_for};
