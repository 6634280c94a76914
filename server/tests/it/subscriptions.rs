//! Standing questions over a real socket: a change that moves a subscribed
//! question's top-k gives exactly one event with the new top-k at its epoch,
//! unrelated changes none; streams resume with `Last-Event-ID`; a webhook gets
//! every event signed, retried after a failure; a standing answer is written
//! again when its cited passage changes; subscriptions survive a restart; and
//! keys see only their own.

use std::io::{BufRead, BufReader};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use twinflow_schemas::api::{EventKind, SearchFilter, SearchMode, SubscriptionCreated, SubscriptionEvent};
use twinflow_schemas::config::AnswerMode;
use twinflow_schemas::{ChangeLimits, parse_change};
use twinflow_server::App;

use crate::fixtures::{ADMIN_KEY, READ_KEY, app_with, article, http, http_with_key, upsert_line};

/// Serves `app` on a free port; the runtime stops it when dropped.
fn serve(app: &Arc<App>) -> (String, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = twinflow_server::router(app.clone());
    runtime.spawn(async move { axum::serve(listener, router).await });
    (base, runtime)
}

/// Ingests NDJSON lines and waits until their epoch is committed and followed.
fn ingest(app: &App, lines: &[String]) -> u64 {
    let changes = lines.iter().map(|l| parse_change(l.as_bytes(), 1, &ChangeLimits::default()).unwrap()).collect();
    let epoch = app.engine().unwrap().submit(changes).unwrap();
    app.engine().unwrap().flush();
    assert!(app.engine().unwrap().wait_committed(epoch, Duration::from_secs(60)));
    let deadline = Instant::now() + Duration::from_secs(30);
    while app.primary().unwrap().subscriptions.stats().followed < epoch {
        assert!(Instant::now() < deadline, "the subscriptions never followed epoch {epoch}");
        std::thread::sleep(Duration::from_millis(10));
    }
    epoch
}

fn delete_line(doc_id: &str) -> String {
    json!({ "op": "delete", "doc_id": doc_id }).to_string()
}

/// One server-sent event: (id, event, data).
type Sse = (String, String, SubscriptionEvent);

/// Reads the event stream of `url` on a thread; its events arrive on the receiver.
fn stream(url: &str, key: &str, last_event_id: Option<u64>) -> mpsc::Receiver<Sse> {
    let client = http_with_key(key, Duration::from_secs(3600));
    let mut request = client.get(url);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id.to_string());
    }
    let response = request.send().unwrap();
    assert_eq!(response.status(), 200, "{url}");
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
        for line in BufReader::new(response).lines() {
            let Ok(line) = line else { return };
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if line.is_empty() && !data.is_empty() {
                let parsed = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
                if tx.send((std::mem::take(&mut id), std::mem::take(&mut event), parsed)).is_err() {
                    return;
                }
                data.clear();
            }
        }
    });
    rx
}

fn next(rx: &mpsc::Receiver<Sse>) -> Sse {
    rx.recv_timeout(Duration::from_secs(30)).expect("an event within 30 s")
}

/// No event within `wait`.
fn quiet(rx: &mpsc::Receiver<Sse>, wait: Duration) {
    if let Ok((id, event, data)) = rx.recv_timeout(wait) {
        panic!("an unexpected event {event} id {id}: {data:?}");
    }
}

/// The webhook receiver: every request's signature header, delivery id and body;
/// the first `fail_first` requests are answered 500.
#[derive(Default)]
struct Hook {
    received: Mutex<Vec<(String, String, String)>>,
    fail_first: std::sync::atomic::AtomicUsize,
}

fn start_hook(runtime: &tokio::runtime::Runtime, hook: Arc<Hook>) -> String {
    use axum::http::{HeaderMap, StatusCode};
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let hook = hook.clone();
            async move {
                let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
                hook.received.lock().push((header("x-twinflow-signature"), header("x-twinflow-delivery"), body));
                let failing = hook.fail_first.load(std::sync::atomic::Ordering::SeqCst);
                if failing > 0 {
                    hook.fail_first.store(failing - 1, std::sync::atomic::Ordering::SeqCst);
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                StatusCode::OK
            }
        }),
    );
    runtime.spawn(async move { axum::serve(listener, router).await });
    url
}

fn ids(event: &SubscriptionEvent) -> Vec<String> {
    event.hits.iter().map(|h| h.chunk_id.to_string()).collect()
}

#[test]
fn standing_questions_follow_the_changes_that_move_them() {
    let dir = tempfile::tempdir().unwrap();
    let configure = |config: &mut twinflow_schemas::config::Config| {
        config.subscriptions.webhook_backoff = Duration::from_millis(50);
        config.rag.answer = AnswerMode::Extractive;
    };
    let app = app_with(dir.path(), configure);
    let topics = ["rivers and boats", "taxes and budgets", "mountains and snow", "trains and stations"];
    let lines: Vec<String> =
        topics.iter().map(|t| upsert_line(t.split(' ').next().unwrap(), t, &article(t, 20))).collect();
    ingest(&app, &lines);
    let (base, runtime) = serve(&app);
    let hook = Arc::new(Hook::default());
    hook.fail_first.store(1, std::sync::atomic::Ordering::SeqCst);
    let hook_url = start_hook(&runtime, hook.clone());

    // Bad requests: 4xx with stable codes, nothing registered.
    let post = |key: &str, body: Value| {
        let response =
            http_with_key(key, Duration::from_secs(60)).post(format!("{base}/v1/subscriptions")).json(&body).send();
        let response = response.unwrap();
        let status = response.status().as_u16();
        (status, response.json::<Value>().unwrap())
    };
    for (body, code) in [
        (json!({ "query": "" }), "invalid_field"),
        (json!({ "query": "rivers", "k": 0 }), "invalid_field"),
        (json!({ "query": "rivers", "mode": "magic" }), "invalid_field"),
        (json!({ "query": "rivers", "webhook": { "url": "ftp://example.com/x" } }), "invalid_field"),
        (
            json!({ "query": "rivers", "webhook": { "url": "http://127.0.0.1:1/x", "secret": "short" } }),
            "invalid_field",
        ),
        (json!({ "query": "rivers", "colour": "blue" }), "invalid_field"),
    ] {
        let (status, error) = post(ADMIN_KEY, body.clone());
        assert_eq!((status, error["error"]["code"].as_str().unwrap()), (400, code), "{body}: {error}");
    }
    let (status, error) = post(READ_KEY, json!({ "query": "rivers", "webhook": { "url": hook_url } }));
    assert_eq!((status, error["error"]["code"].as_str().unwrap()), (403, "forbidden"), "a webhook needs write");
    assert!(app.primary().unwrap().subscriptions.list(None).is_empty());

    // A vector subscription on rivers (k = 2: its ranking is full, so unrelated chunks are not searched
    // again), with a webhook; a hybrid one with a standing answer.
    let (status, created) = post(
        ADMIN_KEY,
        json!({ "query": "rivers and boats", "k": 2, "mode": "vector", "webhook": { "url": hook_url } }),
    );
    assert_eq!(status, 201, "{created}");
    let created: SubscriptionCreated = serde_json::from_value(created).unwrap();
    let secret = created.webhook_secret.clone().expect("a secret made and shown once");
    let id = created.subscription.id.clone();
    assert_eq!(created.event.kind, EventKind::Initial);
    assert_eq!(created.event.hits.len(), 2);
    assert!(created.event.hits.iter().all(|h| h.sources[0].doc_id == "rivers"), "{:?}", created.event.hits);
    let initial_epoch = created.event.epoch;
    let (status, answered) = post(ADMIN_KEY, json!({ "query": "taxes and budgets", "k": 3, "answer": true }));
    assert_eq!(status, 201, "{answered}");
    let answered: SubscriptionCreated = serde_json::from_value(answered).unwrap();

    // The stream starts with the current top-k; the answer stream with it and then the answer.
    let events = stream(&format!("{base}/v1/subscriptions/{id}/events"), ADMIN_KEY, None);
    let (sse_id, kind, first) = next(&events);
    assert_eq!((sse_id, kind.as_str()), (initial_epoch.to_string(), "initial"));
    assert_eq!(ids(&first), ids(&created.event));
    let answers = stream(&format!("{base}/v1/subscriptions/{}/events", answered.subscription.id), ADMIN_KEY, None);
    assert_eq!(next(&answers).1, "initial");
    let (_, kind, answer) = next(&answers);
    assert_eq!(kind, "answer");
    let cited: Vec<String> = answer.answer.as_ref().unwrap().citations.iter().map(|c| c.doc_id.clone()).collect();
    assert!(cited.iter().any(|d| d == "taxes"), "{cited:?}");

    // An unrelated document: no event, and the vector subscription not even searched again.
    let searched = app.primary().unwrap().subscriptions.stats().searched;
    ingest(&app, &[upsert_line("harbour", "Harbour fees", &article("harbour fees and cranes", 3))]);
    quiet(&events, Duration::from_millis(800));
    let stats = app.primary().unwrap().subscriptions.stats();
    assert!(stats.last_touched <= 1, "only the hybrid subscription may be searched again: {stats:?}");
    assert!(stats.searched <= searched + 1, "{stats:?}");

    // The rivers article rewritten: its old chunks leave, new ones enter — one event, at that epoch.
    let edit = ingest(&app, &[upsert_line("rivers", "Rivers", &article("rivers and boats and canals", 20))]);
    let (sse_id, kind, changed) = next(&events);
    assert_eq!((kind.as_str(), changed.kind), ("changed", EventKind::Changed));
    assert_eq!((sse_id, changed.epoch), (edit.to_string(), edit));
    assert_eq!(changed.left.len(), 2, "{changed:?}");
    assert_eq!(changed.entered.len(), 2, "{changed:?}");
    // The event's top-k is the search's at that epoch.
    let vector = app.queries.embed_batch(&["rivers and boats"]).unwrap().remove(0);
    let ranked = app
        .store
        .search_ranked("rivers and boats", &vector, 2, &SearchFilter::default(), SearchMode::Vector, true, true)
        .unwrap();
    assert_eq!(ranked.epoch, edit);
    assert_eq!(ranked.hits.iter().map(|h| h.chunk_id).collect::<Vec<_>>(), changed.entered);
    assert_eq!(ids(&changed), ranked.hits.iter().map(|h| h.chunk_id.to_string()).collect::<Vec<_>>());
    quiet(&events, Duration::from_millis(800));
    // The taxes answer's evidence did not change: no new answer.
    quiet(&answers, Duration::from_millis(200));

    // The taxes article rewritten: the answer is written again from the new passages.
    ingest(&app, &[upsert_line("taxes", "Taxes", &article("taxes and budgets and tariffs", 20))]);
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let (_, kind, event) = next(&answers);
        if kind == "answer" {
            let text = &event.answer.as_ref().unwrap().answer;
            assert!(text.contains("tariffs"), "the answer is from the new passages: {text}");
        }
        kinds.push(kind);
    }
    assert_eq!(kinds, ["changed", "answer"]);

    // Resuming after the initial epoch replays the change.
    let resumed = stream(&format!("{base}/v1/subscriptions/{id}/events"), ADMIN_KEY, Some(initial_epoch));
    let (sse_id, kind, replayed) = next(&resumed);
    assert_eq!((sse_id, kind.as_str()), (edit.to_string(), "changed"));
    assert_eq!(replayed, changed);
    quiet(&resumed, Duration::from_millis(300));
    let response = http().get(format!("{base}/v1/subscriptions/{id}/events")).header("last-event-id", "soon").send();
    assert_eq!(response.unwrap().status(), 400);

    // The rivers document deleted: its chunks leave, others take their place.
    let gone = ingest(&app, &[delete_line("rivers")]);
    let (_, _, deleted) = next(&events);
    assert_eq!(deleted.epoch, gone);
    assert_eq!(deleted.left, changed.entered);
    assert!(deleted.hits.iter().all(|h| h.sources[0].doc_id != "rivers"));

    // The webhook: the first try answered 500, then every event delivered, signed.
    let deadline = Instant::now() + Duration::from_secs(30);
    while hook.received.lock().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "deliveries: {:?}",
            hook.received.lock().iter().map(|r| r.1.clone()).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let received = hook.received.lock().clone();
    assert_eq!(received[0].1, received[1].1, "the failed delivery was tried again with the same id");
    let delivered: Vec<&str> = received[1..].iter().map(|(_, delivery, _)| delivery.as_str()).collect();
    assert_eq!(
        delivered,
        [format!("{id}:{initial_epoch}:initial"), format!("{id}:{edit}:changed"), format!("{id}:{gone}:changed")]
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    for (signature, _, body) in &received {
        let t: u64 = signature.split(',').next().unwrap().trim_start_matches("t=").parse().unwrap();
        let expected = twinflow_pipelines::inference::subscriptions::signature(&secret, t, body);
        assert_eq!(signature, &expected);
    }

    // Keys see their own: the read key sees none of the admin's, and cannot delete them.
    let reader = http_with_key(READ_KEY, Duration::from_secs(60));
    let listed: Value = reader.get(format!("{base}/v1/subscriptions")).send().unwrap().json().unwrap();
    assert_eq!(listed["subscriptions"].as_array().unwrap().len(), 0);
    assert_eq!(reader.get(format!("{base}/v1/subscriptions/{id}")).send().unwrap().status(), 404);
    assert_eq!(reader.delete(format!("{base}/v1/subscriptions/{id}")).send().unwrap().status(), 404);
    assert_eq!(reader.get(format!("{base}/v1/subscriptions/{id}/events")).send().unwrap().status(), 404);
    let listed: Value = http().get(format!("{base}/v1/subscriptions")).send().unwrap().json().unwrap();
    assert_eq!(listed["subscriptions"].as_array().unwrap().len(), 2);
    drop(events);
    drop(answers);
    drop(resumed);
    drop(runtime);

    // A restart keeps them, with their top-k and events; a change made while down is caught up.
    let top = app.primary().unwrap().subscriptions.get(&id).unwrap().top;
    app.shutdown().unwrap();
    drop(app);
    let app = app_with(dir.path(), configure);
    let again = app.primary().unwrap().subscriptions.get(&id).expect("kept across the restart");
    assert_eq!(again.top, top);
    assert_eq!(again.events, 3);
    let (base, _runtime) = serve(&app);
    let events = stream(&format!("{base}/v1/subscriptions/{id}/events"), ADMIN_KEY, Some(edit));
    assert_eq!(next(&events).2.epoch, gone, "the kept events replay after a restart");
    let back = ingest(&app, &[upsert_line("rivers", "Rivers", &article("rivers and boats", 20))]);
    let (_, kind, returned) = next(&events);
    assert_eq!((kind.as_str(), returned.epoch), ("changed", back));
    assert!(returned.hits.iter().all(|h| h.sources[0].doc_id == "rivers"));
    let deleted: Value = http().delete(format!("{base}/v1/subscriptions/{id}")).send().unwrap().json().unwrap();
    assert_eq!(deleted["deleted"], true);
    assert!(app.primary().unwrap().subscriptions.get(&id).is_none());
    app.shutdown().unwrap();
}

/// Hybrid search ranks the candidates' documents by their leads (by default):
/// a standing hybrid question follows those leads too. Rewriting only a
/// candidate document's lead, itself no candidate (no word of the question,
/// below every vector floor), searches the question again, and what it keeps
/// is what a search from scratch finds; without leads in the fusion the same
/// change does not touch it.
#[test]
fn a_hybrid_standing_question_follows_its_candidates_leads() {
    use twinflow_pipelines::inference::subscriptions::{Mode, NewSubscription};
    use twinflow_schemas::config::ChunkSpec;
    for lead_weight in [1.0f32, 0.0] {
        let dir = tempfile::tempdir().unwrap();
        let app = app_with(dir.path(), |config| {
            config.search.lead_weight = lead_weight;
            // A chunk per paragraph, so a rewritten first paragraph is a new lead and nothing else.
            config.chunking.article = ChunkSpec { min_chars: 100, max_chars: 400, boundary_one_in: 4 };
            config.subscriptions.restat_share = 0.5;
        });
        // 60 notes with one word of the question: more than hybrid's 50 candidates of each list.
        let mut lines: Vec<String> = (0..60)
            .map(|i| upsert_line(&format!("n{i}"), "Notes", &format!("Harbour note {i}: ships, rope, tar and gulls.")))
            .collect();
        let harbour = article("harbour cranes", 3);
        let document = |lead: &str| upsert_line("a", "Ledger", &format!("{}\n\n{harbour}", article(lead, 1)));
        lines.push(document("walnut orchards"));
        ingest(&app, &lines);
        let subscriptions = app.primary().unwrap().subscriptions.clone();
        let asked = NewSubscription {
            query: "harbour cranes".into(),
            k: 3,
            filter: SearchFilter::default(),
            mode: Mode::Hybrid,
            answer: false,
            webhook: None,
            owner: "test".into(),
        };
        let created = subscriptions.create(asked).unwrap();
        let id = created.subscription.id.clone();

        let searched = subscriptions.stats().searched;
        // The same length: the other paragraphs keep their chunk ids and places.
        ingest(&app, &[document("chestnut groves")]);
        let stats = subscriptions.stats();
        let expected = if lead_weight > 0.0 { 1 } else { 0 };
        assert_eq!(stats.searched - searched, expected, "leads weighted {lead_weight}: {stats:?}");
        let events = subscriptions.replay(&id, None).unwrap();
        let kept: Vec<_> = events.last().unwrap().hits.iter().map(|h| h.chunk_id).collect();
        assert_eq!(Some(kept), subscriptions.search_again(&id).unwrap(), "leads weighted {lead_weight}");
        app.shutdown().unwrap();
    }
}
