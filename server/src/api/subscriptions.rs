//! Standing questions: `POST /v1/subscriptions` registers one (its top-k is
//! then kept answered by `twinflow_pipelines::inference::subscriptions`),
//! `GET /v1/subscriptions[/{id}]` shows them, `DELETE /v1/subscriptions/{id}`
//! forgets one, and `GET /v1/subscriptions/{id}/events` streams its events as
//! server-sent events whose ids are epochs (resumable with `Last-Event-ID`).
//!
//! A key sees and deletes its own subscriptions (an `admin` key every one);
//! a webhook needs the `write` scope, since it makes this server call out.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use twinflow_pipelines::inference::subscriptions::{Mode, NewSubscription, SubscriptionError, Webhook};
use twinflow_schemas::api::{
    ErrorCode, EventKind, Subscription, SubscriptionCreated, SubscriptionEvent, SubscriptionList, SubscriptionRequest,
};
use twinflow_schemas::auth::Scope;

use super::{ApiError, json_body};
use crate::app::App;
use crate::auth::Caller;

/// Hits a subscription keeps when the request names none.
pub const DEFAULT_K: usize = 10;
/// Shortest webhook secret accepted, in bytes.
const MIN_SECRET: usize = 16;

/// Who is asking, as far as subscriptions care: a name, and whether it sees everything.
struct Asker {
    name: String,
    admin: bool,
    writes: bool,
}

impl Asker {
    fn of(caller: Option<axum::Extension<Caller>>) -> Self {
        match caller.map(|c| c.0) {
            Some(Caller::Key(p) | Caller::Session(p)) => {
                Asker { admin: p.allows(Scope::Admin), writes: p.allows(Scope::Write), name: p.name }
            }
            // `[auth] mode = "none"`: one owner, allowed everything.
            _ => Asker { name: "anyone".into(), admin: true, writes: true },
        }
    }

    fn sees(&self, owner: &str) -> bool {
        self.admin || self.name == owner
    }
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(ErrorCode::NotFound, format!("no subscription {id:?}"))
}

/// Handler of `POST /v1/subscriptions`.
pub async fn create(
    State(app): State<Arc<App>>,
    caller: Option<axum::Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let asker = Asker::of(caller);
    let request: SubscriptionRequest = json_body(&app, body, "")?;
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidField, m);
    let query = super::rag::checked_question(&request.query)?;
    let max_k = app.config.subscriptions.max_k;
    let k = request.k.unwrap_or(DEFAULT_K.min(max_k));
    if k == 0 || k > max_k {
        return Err(invalid(format!("`k` must be between 1 and {max_k}")));
    }
    let mode = match request.mode.as_deref() {
        None => Mode::Hybrid,
        Some(text) => {
            Mode::parse(text).ok_or_else(|| invalid(format!("`mode` must be hybrid, vector or bm25, not {text:?}")))?
        }
    };
    let mut made_secret = None;
    let webhook = match request.webhook {
        None => None,
        Some(_) if !asker.writes => {
            return Err(ApiError::new(
                ErrorCode::Forbidden,
                format!("key {:?} may not set a webhook: it needs the `write` scope", asker.name),
            ));
        }
        Some(webhook) => {
            let url =
                reqwest::Url::parse(&webhook.url).map_err(|e| invalid(format!("`webhook.url` is not a URL ({e})")))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(invalid(format!("`webhook.url` must be an http or https URL, not {:?}", webhook.url)));
            }
            let secret = match webhook.secret {
                Some(secret) if secret.len() < MIN_SECRET => {
                    return Err(invalid(format!("`webhook.secret` must have at least {MIN_SECRET} bytes")));
                }
                Some(secret) => secret,
                None => {
                    let secret = twinflow_schemas::auth::random_token().map_err(ApiError::internal)?;
                    made_secret = Some(secret.clone());
                    secret
                }
            };
            Some(Webhook { url: url.to_string(), secret })
        }
    };
    let new = NewSubscription {
        query,
        k,
        filter: (&request.filters).into(),
        mode,
        answer: request.answer,
        webhook,
        owner: asker.name,
    };
    let subscriptions = app.primary()?.subscriptions.clone();
    let created = tokio::task::spawn_blocking(move || subscriptions.create(new)).await.map_err(ApiError::internal)?;
    let created = created.map_err(|e| match e {
        SubscriptionError::Limit(message) => ApiError::new(ErrorCode::ResourceLimit, message),
        SubscriptionError::Failed(e) => ApiError::internal(e),
    })?;
    let created = SubscriptionCreated { webhook_secret: made_secret, ..created };
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

/// Handler of `GET /v1/subscriptions`.
pub async fn list(
    State(app): State<Arc<App>>,
    caller: Option<axum::Extension<Caller>>,
) -> Result<Json<SubscriptionList>, ApiError> {
    let asker = Asker::of(caller);
    let owner = (!asker.admin).then_some(asker.name.as_str());
    Ok(Json(SubscriptionList { subscriptions: app.primary()?.subscriptions.list(owner) }))
}

/// Handler of `GET /v1/subscriptions/{id}`.
pub async fn get(
    State(app): State<Arc<App>>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Json<Subscription>, ApiError> {
    let asker = Asker::of(caller);
    app.primary()?.subscriptions.get(&id).filter(|s| asker.sees(&s.owner)).map(Json).ok_or_else(|| unknown(&id))
}

/// Handler of `DELETE /v1/subscriptions/{id}`.
pub async fn delete(
    State(app): State<Arc<App>>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let asker = Asker::of(caller);
    if !app.primary()?.subscriptions.owner(&id).is_some_and(|owner| asker.sees(&owner)) {
        return Err(unknown(&id));
    }
    let deleted = app.primary()?.subscriptions.delete(&id).map_err(ApiError::internal)?;
    Ok(Json(serde_json::json!({ "id": id, "deleted": deleted })))
}

/// One open event stream, counted against `[subscriptions] max_streams`.
struct StreamSlot(Arc<App>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Handler of `GET /v1/subscriptions/{id}/events`.
pub async fn events(
    State(app): State<Arc<App>>,
    caller: Option<axum::Extension<Caller>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let asker = Asker::of(caller);
    if !app.primary()?.subscriptions.owner(&id).is_some_and(|owner| asker.sees(&owner)) {
        return Err(unknown(&id));
    }
    let after = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(value.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidQuery, "`Last-Event-ID` must be an epoch (a whole number)")
        })?),
    };
    let max = app.config.subscriptions.max_streams;
    if app.streams.fetch_add(1, Ordering::SeqCst) >= max {
        app.streams.fetch_sub(1, Ordering::SeqCst);
        return Err(ApiError::new(
            ErrorCode::Overloaded,
            format!("{max} event streams are open, the most `[subscriptions] max_streams` allows"),
        ));
    }
    let slot = StreamSlot(app.clone());
    // Listening before the replay: nothing falls between the two (repeats are skipped).
    let live = app.primary()?.subscriptions.listen();
    let replay = app.primary()?.subscriptions.replay(&id, after).ok_or_else(|| unknown(&id))?;
    let state = Stream { slot, id, live, queue: replay.into(), last: after.map(|e| (e, EventKind::Answer)) };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        let event = state.next().await?;
        Some((Ok::<Event, Infallible>(sse(&event)), state))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

/// One client's stream: the replayed events, then the live ones of its subscription.
struct Stream {
    slot: StreamSlot,
    id: String,
    live: tokio::sync::broadcast::Receiver<Arc<SubscriptionEvent>>,
    queue: std::collections::VecDeque<Arc<SubscriptionEvent>>,
    /// The last event sent (epoch, kind): older top-k events are repeats.
    last: Option<(u64, EventKind)>,
}

impl Stream {
    async fn next(&mut self) -> Option<Arc<SubscriptionEvent>> {
        loop {
            let event = match self.queue.pop_front() {
                Some(event) => event,
                None => match self.live.recv().await {
                    Ok(event) if event.subscription == self.id => event,
                    Ok(_) => continue,
                    // Too far behind the broadcast: catch up from the saved events.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let after = self.last.map(|(epoch, _)| epoch);
                        self.queue = self.slot.0.primary().ok()?.subscriptions.replay(&self.id, after)?.into();
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
            };
            let repeat = match self.last {
                Some((epoch, _)) if event.kind != EventKind::Answer => event.epoch <= epoch,
                _ => false,
            };
            if repeat {
                continue;
            }
            if event.kind != EventKind::Answer || self.last.is_none() {
                self.last = Some((event.epoch, event.kind));
            }
            return Some(event);
        }
    }
}

fn sse(event: &SubscriptionEvent) -> Event {
    Event::default()
        .id(event.epoch.to_string())
        .event(event.kind.as_str())
        .data(serde_json::to_string(event).unwrap_or_default())
}
