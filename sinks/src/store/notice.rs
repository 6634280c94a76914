//! Following commits: each commit's [`CommitNotice`] to the observers
//! registered with [`Store::on_commit`], and what a follower needs to tell
//! which notices can move a ranking — the query as the vector index scores
//! it, and as BM25 weighs it.

use std::collections::HashMap;
use std::sync::Arc;

use twinflow_schemas::Hash128;

use super::{State, Store};
use crate::error::Result;

/// What one commit changed, told to the observers after the epoch is
/// visible to searches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CommitNotice {
    /// The committed epoch (searches already answer at it or later).
    pub epoch: u64,
    /// Every chunk with an update in the epoch: added, deleted, or one of
    /// its occurrences changed.
    pub touched: Vec<Hash128>,
    /// The touched chunks still live, each with its text and its vector as
    /// vector search scores it (projected by the active adapter; `None`
    /// without a vector of the index's dimension).
    pub present: Vec<(Hash128, String, Option<Vec<f32>>)>,
    /// Distinct live chunks after the epoch.
    pub chunks: u64,
    /// The active projection's id: a change means every vector score moved.
    pub projection: Option<String>,
    /// When the epoch became visible to searches (ms since the Unix epoch).
    pub at_ms: i64,
}

/// A function told of every commit; it should return quickly (hand the
/// notice to a thread of its own), since the next commit waits for it.
pub type CommitObserver = Arc<dyn Fn(&CommitNotice) + Send + Sync>;

impl Store {
    /// Calls `observer` after every later commit (and after a projection
    /// switch, with nothing touched), in epoch order.
    pub fn on_commit(&self, observer: CommitObserver) {
        self.observers.write().push(observer);
    }

    /// Tells the observers what `touched` became at the committed epoch.
    /// Called with the writer lock held, so the state is that epoch's.
    pub(super) fn notify(&self, touched: impl IntoIterator<Item = Hash128>) {
        let observers = self.observers.read().clone();
        if observers.is_empty() {
            return;
        }
        let notice = self.state.read().notice(touched.into_iter().collect(), self.dim);
        for observer in &observers {
            observer(&notice);
        }
    }

    /// `query` as the vector index scores it (projected by the active adapter).
    pub fn query_space(&self, query: &[f32]) -> Vec<f32> {
        self.state.read().query(query).into_owned()
    }

    /// `query` as BM25 weighs it at the committed epoch.
    pub fn bm25_query(&self, query: &str) -> Result<crate::Bm25Query> {
        self.state.read().text.bm25_query(query)
    }

    /// The words of `text` as BM25 reads them, with their counts, and their total.
    pub fn word_counts(&self, text: &str) -> (HashMap<String, u32>, u32) {
        self.state.read().text.word_counts(text)
    }
}

impl State {
    fn notice(&self, touched: Vec<Hash128>, dim: usize) -> CommitNotice {
        let vectors = self.vectors();
        let present = touched
            .iter()
            .filter_map(|id| {
                let chunk = self.live.chunks.present(id).next()?;
                let vector = self
                    .live
                    .embeddings
                    .present(id)
                    .map(|row| vectors.of(row))
                    .find(|v| v.len() == dim)
                    .map(<[f32]>::to_vec);
                Some((*id, chunk.text.clone(), vector))
            })
            .collect();
        CommitNotice {
            epoch: self.committed,
            touched,
            present,
            chunks: self.text.len(),
            projection: self.projection.as_ref().map(|p| p.id().to_owned()),
            at_ms: crate::manifest::now_ms() as i64,
        }
    }
}
