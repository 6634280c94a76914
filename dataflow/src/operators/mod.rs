//! The engine's custom operators, one per file, as extension traits on
//! differential collections.
//!
//! | file | operator |
//! |---|---|
//! | `embed.rs` | [`EmbedExt::embed`]: batched, cached embedding of distinct chunk texts |
//! | `drift.rs` | [`DriftStatsExt::drift_stats`]: per-epoch drift statistics by the epoch chunks entered |
//! | `collect.rs` | [`CollectEpochsExt::collect_epochs`]: per-worker epoch outputs for the sinks |

pub mod collect;
pub mod drift;
pub mod embed;

pub use collect::{CollectEpochsExt, OutRow, WorkerMsg};
pub use drift::{DriftInput, DriftStatsExt};
pub use embed::{ComputedVectors, EmbedCache, EmbedExt, EmbedFailure};
