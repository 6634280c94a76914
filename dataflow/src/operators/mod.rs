//! The engine's custom operators, one per file, as extension traits on
//! differential collections.
//!
//! | file | operator |
//! |---|---|
//! | `embed.rs` | [`EmbedExt::embed`]: batched, cached embedding of distinct chunk texts |
//! | `collect.rs` | [`CollectEpochsExt::collect_epochs`]: per-worker epoch outputs for the sinks |

pub mod collect;
pub mod embed;

pub use collect::{CollectEpochsExt, OutRow, WorkerMsg};
pub use embed::{EmbedCache, EmbedExt};
