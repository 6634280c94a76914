//! Standing questions: each subscription's top-k kept answered as commits
//! change the chunks, and an event for every change of it.
//!
//! ```text
//!  Store::commit ─▶ CommitNotice ─▶ follower thread (notices merged while it is busy)
//!                                     │ matcher.rs: which subscriptions can move (no search)
//!                                     │ those searched again (exact) ─▶ top-k changed? ─▶ event
//!                                     ▼
//!     events ─▶ broadcast (the server's SSE streams) · webhook.rs (signed, retried) · saved (persist.rs)
//!     answers: a touched subscription whose cited chunks changed ─▶ answer thread ─▶ `answer` event
//! ```
//!
//! | file | what it owns |
//! |---|---|
//! | `mod.rs` | [`Subscriptions`]: open, create, list, delete, replay, listen; saving |
//! | `rounds.rs` | the follower: notices merged, touched subscriptions searched again, events |
//! | `answers.rs` | standing answers: written again on their own thread when touched, sent as `answer` events |
//! | `matcher.rs` | which subscriptions a commit can move, decided without searching |
//! | `persist.rs` | one file per subscription under `<data>/_subscriptions/`, and the epoch followed |
//! | `webhook.rs` | deliveries to webhooks: HMAC-SHA256 signatures, retries with backoff |

mod answers;
mod matcher;
mod persist;
mod rounds;
mod webhook;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use twinflow_dataflow::Embedder;
use twinflow_schemas::Hash128;
use twinflow_schemas::api::{
    EventKind, RagResponse, RankedChunk, SearchFilter, SearchHit, SearchMode, Subscription, SubscriptionCreated,
    SubscriptionEvent,
};
use twinflow_schemas::config::SubscriptionsConfig;
use twinflow_sinks::{CommitNotice, Store};

pub use matcher::{Matcher, Rankings, Standing, Touches};
pub use webhook::signature;

use crate::Failure;

/// How a subscription ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The active retrieval setting's fusion, followed when it changes.
    Hybrid,
    Vector,
    Bm25,
}

impl Mode {
    /// `hybrid`, `vector` or `bm25`.
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "hybrid" => Some(Mode::Hybrid),
            "vector" => Some(Mode::Vector),
            "bm25" => Some(Mode::Bm25),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Hybrid => "hybrid",
            Mode::Vector => "vector",
            Mode::Bm25 => "bm25",
        }
    }
}

/// A webhook and its signing key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Webhook {
    pub url: String,
    pub secret: String,
}

/// A subscription as registered: what was asked, its id and when.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Spec {
    pub id: String,
    pub created_at_ms: i64,
    #[serde(flatten)]
    pub asked: NewSubscription,
}

/// A new subscription's request, checked by the caller.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewSubscription {
    pub query: String,
    pub k: usize,
    pub filter: SearchFilter,
    pub mode: Mode,
    pub answer: bool,
    pub webhook: Option<Webhook>,
    pub owner: String,
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// Over `[subscriptions] max` or `max_per_key`.
    #[error("{0}")]
    Limit(String),
    #[error(transparent)]
    Failed(#[from] Failure),
}

/// Writes the answer of a subscription with `answer: true` (the RAG pipeline).
pub type Answerer = Arc<dyn Fn(&Spec) -> Result<RagResponse, String> + Send + Sync>;

/// The hybrid fusion in force (the active retrieval setting's).
pub type FusionSource = Arc<dyn Fn() -> SearchMode + Send + Sync>;

/// What following commits has cost, for `/v1/status`, metrics and benches.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct FollowStats {
    pub subscriptions: usize,
    /// The last epoch whose notice was processed.
    pub followed: u64,
    /// Notices processed (several merged while the follower was busy count once).
    pub rounds: u64,
    /// Subscriptions searched again, over every round.
    pub searched: u64,
    /// Events sent (all kinds).
    pub events: u64,
    /// The last round: subscriptions touched (and why), those of them
    /// searched again (the others settled by their kept rankings), and its
    /// time in ms (matching alone, then with the searches).
    pub last_touched: usize,
    pub last_searched: usize,
    pub last_touches: (usize, usize, usize, usize),
    pub last_match_ms: f64,
    pub last_round_ms: f64,
}

/// One subscription's state besides its [`Standing`] (in the matcher).
#[derive(Debug)]
struct Sub {
    spec: Spec,
    slot: u32,
    /// The embedded query (not projected); empty in `bm25` mode.
    query: Vec<f32>,
    top: Vec<RankedChunk>,
    epoch: u64,
    events: VecDeque<Arc<SubscriptionEvent>>,
    /// The epoch of the newest event no longer kept.
    dropped_through: u64,
    event_count: u64,
    /// The chunks the current answer cites.
    cited: Vec<Hash128>,
}

#[derive(Debug, Default)]
struct Engine {
    subs: HashMap<String, Sub>,
    by_slot: HashMap<u32, String>,
    matcher: Matcher,
    /// Chunks changed since the store opened (BM25's statistics rule).
    changes: u64,
    projection: Option<String>,
    fusion: Option<SearchMode>,
    /// Every subscription is searched at the next round (after a restart that missed commits).
    stale: bool,
    /// Subscriptions whose rankings or events changed since they were saved;
    /// the epoch followed is saved only when there are none, so a restart
    /// after a crash searches every subscription again rather than trust them
    /// (an event not saved is not replayed, but the next one, at a later
    /// epoch, carries the whole top-k).
    dirty: HashSet<String>,
    stats: FollowStats,
}

/// Every standing question, followed across commits.
pub struct Subscriptions {
    store: Arc<Store>,
    embedder: Arc<dyn Embedder>,
    fusion: FusionSource,
    config: SubscriptionsConfig,
    files: persist::Files,
    engine: Mutex<Engine>,
    events: tokio::sync::broadcast::Sender<Arc<SubscriptionEvent>>,
    answerer: RwLock<Option<Answerer>>,
    answers: crossbeam_channel::Sender<String>,
    pending_answers: Mutex<HashSet<String>>,
    webhooks: webhook::Deliveries,
}

impl std::fmt::Debug for Subscriptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriptions").field("subscriptions", &self.engine.lock().subs.len()).finish()
    }
}

/// Unsaved subscriptions written after each round, and each second without one.
const FLUSH_PER_ROUND: usize = 256;
const FLUSH_WHEN_IDLE: usize = 2048;

/// Slots of the event broadcast: a stream further behind resumes from the saved events.
const BROADCAST: usize = 4096;

impl Subscriptions {
    /// Loads the saved subscriptions of `store`'s data directory and starts
    /// following its commits. Subscriptions saved before the last committed
    /// epoch are searched again first (a commit may have been missed).
    pub fn open(
        store: Arc<Store>,
        embedder: Arc<dyn Embedder>,
        fusion: FusionSource,
        config: SubscriptionsConfig,
    ) -> Result<Arc<Self>, Failure> {
        let files = persist::Files::open(store.data_dir())?;
        let (saved, followed) = files.load()?;
        let mut engine = Engine { matcher: Matcher::new(store.dim()), ..Engine::default() };
        engine.projection = store.projection();
        engine.stats.followed = followed;
        let committed = store.committed_epoch();
        engine.stale = followed < committed;
        let model_id = embedder.model_id().to_owned();
        for saved in saved {
            let persist::Saved {
                spec,
                model_id: saved_model,
                query,
                mut standing,
                top,
                epoch,
                events,
                dropped_through,
                event_count,
                cited,
            } = saved;
            // Another encoder since: the query is embedded again, and searched again.
            let query = if spec.asked.mode == Mode::Bm25 || saved_model == model_id {
                query
            } else {
                engine.stale = true;
                embed(embedder.as_ref(), &spec.asked.query)?
            };
            if !query.is_empty() && standing.vector_floor.is_some() {
                standing.vector = store.query_space(&query);
            }
            let slot = engine.matcher.insert(standing);
            engine.by_slot.insert(slot, spec.id.clone());
            let events = events.into_iter().map(Arc::new).collect();
            engine.subs.insert(
                spec.id.clone(),
                Sub { spec, slot, query, top, epoch, events, dropped_through, event_count, cited },
            );
        }
        tracing::info!(subscriptions = engine.subs.len(), followed, committed, "subscriptions loaded");
        let (answers, answer_queue) = crossbeam_channel::unbounded();
        let (events, _) = tokio::sync::broadcast::channel(BROADCAST);
        let webhooks = webhook::Deliveries::start(&config)?;
        let this = Arc::new(Subscriptions {
            store: store.clone(),
            embedder,
            fusion,
            config,
            files,
            engine: Mutex::new(engine),
            events,
            answerer: RwLock::new(None),
            answers,
            pending_answers: Mutex::default(),
            webhooks,
        });
        let (notices, queue) = crossbeam_channel::unbounded::<CommitNotice>();
        store.on_commit(Arc::new(move |notice: &CommitNotice| {
            let _ = notices.send(notice.clone());
        }));
        let weak = Arc::downgrade(&this);
        std::thread::Builder::new()
            .name("twinflow-subscriptions".into())
            .spawn(move || rounds::follow(weak, queue))
            .map_err(|e| Failure { what: "cannot start the subscriptions' thread".into(), source: Box::new(e) })?;
        let weak = Arc::downgrade(&this);
        std::thread::Builder::new()
            .name("twinflow-standing-answers".into())
            .spawn(move || answers::answer_loop(weak, answer_queue))
            .map_err(|e| Failure { what: "cannot start the standing answers' thread".into(), source: Box::new(e) })?;
        if this.engine.lock().stale {
            // Searched again at once rather than at the next commit.
            this.round(CommitNotice { epoch: committed, ..CommitNotice::default() });
        }
        Ok(this)
    }

    /// Registers a standing question: searched now (its `initial` event), then
    /// followed.
    pub fn create(&self, new: NewSubscription) -> Result<SubscriptionCreated, SubscriptionError> {
        let query = match new.mode {
            Mode::Bm25 => Vec::new(),
            _ => embed(self.embedder.as_ref(), &new.query)?,
        };
        let id = format!("sub_{}", persist::random_id()?);
        let spec = Spec { id: id.clone(), created_at_ms: now_ms(), asked: new };
        // Searched outside the lock (creations run side by side, and beside the
        // follower); again inside it when a round ran meanwhile, which may have
        // followed a commit this search did not see.
        let (changes, rounds) = {
            let engine = self.engine.lock();
            (engine.changes, engine.stats.rounds)
        };
        let found = self.search(&spec, &query, changes)?;
        let mut engine = self.engine.lock();
        if engine.subs.len() >= self.config.max {
            return Err(SubscriptionError::Limit(format!(
                "this server holds {} subscriptions, the most `[subscriptions] max` allows",
                engine.subs.len()
            )));
        }
        let owned = engine.subs.values().filter(|s| s.spec.asked.owner == spec.asked.owner).count();
        if owned >= self.config.max_per_key {
            return Err(SubscriptionError::Limit(format!(
                "key {:?} holds {owned} subscriptions, the most `[subscriptions] max_per_key` allows",
                spec.asked.owner
            )));
        }
        let (ranked, standing) = if engine.stats.rounds == rounds && !engine.stale {
            found
        } else {
            self.search(&spec, &query, engine.changes)?
        };
        let top = ranked_top(&ranked.hits);
        let event = Arc::new(SubscriptionEvent {
            subscription: id.clone(),
            kind: EventKind::Initial,
            epoch: ranked.epoch,
            entered: top.iter().map(|h| h.chunk_id).collect(),
            left: Vec::new(),
            hits: ranked.hits,
            answer: None,
            at_ms: now_ms(),
            committed_at_ms: 0,
        });
        let slot = engine.matcher.insert(standing);
        engine.by_slot.insert(slot, id.clone());
        let mut sub = Sub {
            spec,
            slot,
            query,
            top,
            epoch: event.epoch,
            events: VecDeque::new(),
            dropped_through: 0,
            event_count: 0,
            cited: Vec::new(),
        };
        self.record(&mut sub, event.clone());
        let view = view(&sub);
        let webhook = sub.spec.asked.webhook.clone();
        self.save_sub(&sub, engine.matcher.get(sub.slot));
        engine.subs.insert(id.clone(), sub);
        drop(engine);
        metrics::gauge!("twinflow_subscriptions").increment(1.0);
        self.publish(event.clone(), webhook.as_ref());
        if view.answer {
            self.queue_answer(&id);
        }
        Ok(SubscriptionCreated { subscription: view, event: event.as_ref().clone(), webhook_secret: None })
    }

    /// The subscription `id`.
    pub fn get(&self, id: &str) -> Option<Subscription> {
        self.engine.lock().subs.get(id).map(view)
    }

    /// Every subscription, or those of `owner`, oldest first.
    pub fn list(&self, owner: Option<&str>) -> Vec<Subscription> {
        let engine = self.engine.lock();
        let mut subs: Vec<Subscription> =
            engine.subs.values().filter(|s| owner.is_none_or(|o| s.spec.asked.owner == o)).map(view).collect();
        subs.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        subs
    }

    /// Forgets `id`; false when there was none.
    pub fn delete(&self, id: &str) -> Result<bool, Failure> {
        let mut engine = self.engine.lock();
        let Some(sub) = engine.subs.remove(id) else { return Ok(false) };
        engine.matcher.remove(sub.slot);
        engine.by_slot.remove(&sub.slot);
        self.files.remove(id)?;
        metrics::gauge!("twinflow_subscriptions").decrement(1.0);
        Ok(true)
    }

    /// The events a stream resuming after epoch `after` is owed (`None`:
    /// a new stream, owed the current top-k): those after it, or the
    /// current top-k when events after it are no longer kept. An `answer`
    /// at `after` itself is sent again (at least once). `None` for an
    /// unknown subscription.
    pub fn replay(&self, id: &str, after: Option<u64>) -> Option<Vec<Arc<SubscriptionEvent>>> {
        let engine = self.engine.lock();
        let sub = engine.subs.get(id)?;
        let current = || {
            let last_top = sub.events.iter().rposition(|e| e.kind != EventKind::Answer);
            last_top.map_or_else(Vec::new, |i| sub.events.iter().skip(i).cloned().collect())
        };
        Some(match after {
            Some(after) if sub.dropped_through <= after => sub
                .events
                .iter()
                .filter(|e| e.epoch > after || (e.epoch == after && e.kind == EventKind::Answer))
                .cloned()
                .collect(),
            _ => current(),
        })
    }

    /// Every event from now on (all subscriptions).
    pub fn listen(&self) -> tokio::sync::broadcast::Receiver<Arc<SubscriptionEvent>> {
        self.events.subscribe()
    }

    /// What following has cost so far.
    pub fn stats(&self) -> FollowStats {
        let engine = self.engine.lock();
        FollowStats { subscriptions: engine.subs.len(), ..engine.stats.clone() }
    }

    /// `id`'s top-k searched from scratch now, as its rounds would find it
    /// (for checking what the matcher kept); `None` for an unknown id.
    pub fn search_again(&self, id: &str) -> Result<Option<Vec<Hash128>>, Failure> {
        let Some((spec, query)) = self.engine.lock().subs.get(id).map(|s| (s.spec.clone(), s.query.clone())) else {
            return Ok(None);
        };
        let (ranked, _) = self.search(&spec, &query, 0)?;
        Ok(Some(ranked.hits.iter().map(|h| h.chunk_id).collect()))
    }

    /// The owner of `id`.
    pub fn owner(&self, id: &str) -> Option<String> {
        self.engine.lock().subs.get(id).map(|s| s.spec.asked.owner.clone())
    }

    /// Saves up to `most` subscriptions with unsaved rankings, then, when
    /// none is left, the epoch followed.
    fn flush(&self, engine: &mut Engine, most: usize) {
        let ids: Vec<String> = engine.dirty.iter().take(most).cloned().collect();
        for id in ids {
            engine.dirty.remove(&id);
            if let Some(sub) = engine.subs.get(&id) {
                self.save_sub(sub, engine.matcher.get(sub.slot));
            }
        }
        if engine.dirty.is_empty()
            && let Err(e) = self.files.save_followed(engine.stats.followed)
        {
            tracing::warn!(error = %crate::failure::error_chain(&e), "the epoch subscriptions follow could not be saved; they are searched again after a restart");
        }
    }

    /// Saves every subscription's rankings and events, and the epoch followed (at shutdown).
    pub fn save_all(&self) {
        self.save_some(usize::MAX);
    }

    /// Saves up to `most` unsaved subscriptions (then the epoch followed, when none is left).
    fn save_some(&self, most: usize) {
        let mut engine = self.engine.lock();
        if !engine.dirty.is_empty() {
            self.flush(&mut engine, most);
        }
    }

    /// Keeps `event` among `sub`'s last events.
    fn record(&self, sub: &mut Sub, event: Arc<SubscriptionEvent>) {
        sub.events.push_back(event);
        sub.event_count += 1;
        while sub.events.len() > self.config.events_kept.max(1) {
            if let Some(dropped) = sub.events.pop_front() {
                sub.dropped_through = sub.dropped_through.max(dropped.epoch);
            }
        }
    }

    /// Sends `event` to the streams and the webhook.
    fn publish(&self, event: Arc<SubscriptionEvent>, webhook: Option<&Webhook>) {
        metrics::counter!("twinflow_subscription_events_total").increment(1);
        if let Some(webhook) = webhook {
            self.webhooks.send(webhook, &event);
        }
        let _ = self.events.send(event);
    }

    fn save_sub(&self, sub: &Sub, standing: Option<&Standing>) {
        let saved = persist::Saved {
            spec: sub.spec.clone(),
            model_id: self.embedder.model_id().to_owned(),
            query: sub.query.clone(),
            standing: standing.cloned().unwrap_or_default(),
            top: sub.top.clone(),
            epoch: sub.epoch,
            events: sub.events.iter().map(|e| e.as_ref().clone()).collect(),
            dropped_through: sub.dropped_through,
            event_count: sub.event_count,
            cited: sub.cited.clone(),
        };
        if let Err(e) = self.files.save(&saved) {
            tracing::warn!(subscription = %sub.spec.id, error = %crate::failure::error_chain(&e), "a subscription could not be saved");
        }
    }
}

fn embed(embedder: &dyn Embedder, text: &str) -> Result<Vec<f32>, Failure> {
    let failed = |e: String| Failure { what: "cannot embed the subscription's query".into(), source: e.into() };
    let mut vectors = embedder.embed_batch(&[text]).map_err(|e| failed(e.to_string()))?;
    vectors.pop().ok_or_else(|| failed("the encoder returned no vector".into()))
}

fn ranked_top(hits: &[SearchHit]) -> Vec<RankedChunk> {
    hits.iter().map(|h| RankedChunk { chunk_id: h.chunk_id, score: h.score }).collect()
}

fn view(sub: &Sub) -> Subscription {
    let spec = &sub.spec;
    Subscription {
        id: spec.id.clone(),
        query: spec.asked.query.clone(),
        k: spec.asked.k,
        filters: spec.asked.filter.clone(),
        mode: spec.asked.mode.as_str().to_owned(),
        answer: spec.asked.answer,
        webhook: spec.asked.webhook.as_ref().map(|w| w.url.clone()),
        owner: spec.asked.owner.clone(),
        created_at_ms: spec.created_at_ms,
        epoch: sub.epoch,
        top: sub.top.clone(),
        events: sub.event_count,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
