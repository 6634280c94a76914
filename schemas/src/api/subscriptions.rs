//! `/v1/subscriptions`: standing questions whose top-k the engine keeps
//! answered as the chunks change, and the events that report each change.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{RagFilters, RagResponse, SearchFilter, SearchHit};
use crate::ids::Hash128;

/// Body of `POST /v1/subscriptions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// The question, searched as `GET /v1/search?q=` would.
    pub query: String,
    /// Hits kept (default 10).
    #[serde(default)]
    pub k: Option<usize>,
    /// Filters on the chunks' documents, named as in `/v1/search`.
    #[serde(default)]
    pub filters: RagFilters,
    /// `hybrid` (default: the active retrieval setting's fusion), `vector` or `bm25`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Also keep a RAG answer, written again whenever the evidence it cites changes.
    #[serde(default)]
    pub answer: bool,
    /// Where each event is also POSTed (needs the write scope).
    #[serde(default)]
    pub webhook: Option<WebhookRequest>,
}

/// A webhook of a subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// An `http` or `https` URL.
    pub url: String,
    /// The HMAC-SHA256 key of the `X-Twinflow-Signature` header (at least 16
    /// bytes); one is made and returned once when none is given.
    #[serde(default)]
    pub secret: Option<String>,
}

/// A subscription as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Subscription {
    /// `sub_…`.
    pub id: String,
    pub query: String,
    pub k: usize,
    pub filters: SearchFilter,
    /// `hybrid`, `vector` or `bm25`.
    pub mode: String,
    pub answer: bool,
    /// The webhook's URL (its secret is never shown again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The name of the key that made it.
    pub owner: String,
    pub created_at_ms: i64,
    /// The epoch its top-k was last found to change (or first computed).
    pub epoch: u64,
    /// The current top-k (ids and scores; the last event has the texts).
    pub top: Vec<RankedChunk>,
    /// Events sent so far.
    pub events: u64,
}

/// One hit of a subscription's top-k.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RankedChunk {
    pub chunk_id: Hash128,
    pub score: f32,
}

/// Answer of `POST /v1/subscriptions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionCreated {
    pub subscription: Subscription,
    /// The top-k at registration (the first event, `initial`).
    pub event: SubscriptionEvent,
    /// The webhook's signing key, when twinflow made it: shown this once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// Answer of `GET /v1/subscriptions`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionList {
    pub subscriptions: Vec<Subscription>,
}

/// What an event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The top-k at registration.
    Initial,
    /// The top-k changed (chunks entered, left or moved).
    Changed,
    /// The answer was written again (`answer: true`).
    Answer,
}

impl EventKind {
    /// Its name on the event stream and in webhook headers (`initial`, `changed`, `answer`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Changed => "changed",
            Self::Answer => "answer",
        }
    }
}

/// One event of a subscription: its id on the event stream is `epoch`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionEvent {
    pub subscription: String,
    pub kind: EventKind,
    /// The committed epoch the top-k (or the answer's retrieval) is as of.
    pub epoch: u64,
    /// The top-k at `epoch`, with texts and provenance (empty for `answer`).
    pub hits: Vec<SearchHit>,
    /// Chunks that entered the top-k with this event.
    pub entered: Vec<Hash128>,
    /// Chunks that left it.
    pub left: Vec<Hash128>,
    /// The regenerated answer (`answer` events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Box<RagResponse>>,
    /// When the event was made (ms since the Unix epoch).
    pub at_ms: i64,
    /// When the commit it reports became visible (ms since the Unix epoch; 0 for `initial` and `answer`).
    pub committed_at_ms: i64,
}
