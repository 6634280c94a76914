//! Search through the router: filters inside the top k, BM25 and hybrid
//! across epochs and a restart, and hybrid's weights from the config, then
//! from the active retrieval setting as it is promoted and rolled back.

use axum::body::Body;
use axum::http::{Request, StatusCode};

use twinflow_schemas::api::{ErrorCode, SearchResponse};

use crate::fixtures::{app, article, upsert_line};
use crate::router::{expect_error, post, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_filters_apply_before_the_top_k() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let line = |doc_id: &str, author: &str, kind: &str, content: &str| {
        serde_json::json!({"op": "upsert", "doc_id": doc_id, "kind": kind, "author": author,
                           "title": doc_id, "source": "test", "content": content})
        .to_string()
    };
    // Grace's documents match the query better; Ada's one only a little.
    let body = [
        line("grace-1", "Grace", "article", "Harbour ports and ships: ports, ships and harbour cranes."),
        line("grace-2", "Grace", "post", "Ships in ports, ports with ships, harbour ships."),
        line("ada-1", "Ada", "article", "Engines compute numbers; a ship appears once."),
    ]
    .join("\n");
    let (status, _) = send(&app, post("/v1/documents?wait=true", "application/x-ndjson", body)).await;
    assert_eq!(status, StatusCode::OK);
    let search = |uri: String| async {
        let (status, body) = send(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let response: SearchResponse = serde_json::from_slice(&body).unwrap();
        response.results.iter().map(|h| h.sources[0].doc_id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(search("/v1/search?q=ships%20ports&k=1&mode=vector".into()).await[0], "grace-2");
    // k = 1 still finds Ada's chunk: the filter is applied before the top k.
    assert_eq!(search("/v1/search?q=ships%20ports&k=1&author=Ada".into()).await, ["ada-1"]);
    assert_eq!(search("/v1/search?q=ships%20ports&k=5&kind=article&author=Grace".into()).await, ["grace-1"]);
    assert_eq!(search("/v1/search?q=ships&k=5&doc_id=grace-1".into()).await, ["grace-1"]);
    assert!(search("/v1/search?q=ships&k=5&author=Nobody".into()).await.is_empty());
    assert!(search("/v1/search?q=ships&k=5&until=0".into()).await.is_empty());
    assert_eq!(search("/v1/search?q=ships&k=5&since=0&source=test".into()).await.len(), 3);
    let bad = Request::get("/v1/search?q=ships&kind=essay").body(Body::empty()).unwrap();
    expect_error(&app, bad, StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery).await;
    app.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bm25_and_hybrid_follow_epochs_and_survive_a_restart() {
    use twinflow_schemas::api::SearchHit;
    let dir = tempfile::tempdir().unwrap();
    let get = |app: std::sync::Arc<twinflow_server::App>, uri: &'static str| async move {
        let (status, body) = send(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<SearchResponse>(&body).unwrap()
    };
    let ids = |hits: &[SearchHit]| hits.iter().map(|h| h.sources[0].doc_id.clone()).collect::<Vec<_>>();
    let app = app(dir.path());
    let body = [
        upsert_line("fish", "Fish", "The zebrafish regrows its fins; zebrafish are small."),
        upsert_line("birds", "Birds", "Sparrows and finches sing in the garden every morning."),
        upsert_line("cars", "Cars", "Engines, wheels and gearboxes make a car move."),
    ]
    .join("\n");
    let (status, _) = send(&app, post("/v1/documents?wait=true", "application/x-ndjson", body)).await;
    assert_eq!(status, StatusCode::OK);

    let bm25 = get(app.clone(), "/v1/search?q=zebrafish&k=3&mode=bm25").await;
    assert_eq!(ids(&bm25.results), ["fish"], "only the chunk with the word");
    assert!(bm25.results[0].bm25_score.is_some() && bm25.results[0].vector_score.is_none());
    let hybrid = get(app.clone(), "/v1/search?q=zebrafish&k=3").await;
    assert_eq!(hybrid.results[0].sources[0].doc_id, "fish");
    assert!(hybrid.results[0].bm25_score.is_some() && hybrid.results[0].vector_score.is_some());
    assert_eq!(hybrid.results.len(), 3, "vector candidates fill k");
    let unknown = Request::get("/v1/search?q=x&mode=fuzzy").body(Body::empty()).unwrap();
    expect_error(&app, unknown, StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery).await;

    // A delete retracts the chunk from the full-text index at its epoch.
    let delete = r#"{"op":"delete","doc_id":"fish"}"#;
    let (status, _) = send(&app, post("/v1/documents?wait=true", "application/x-ndjson", delete)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(get(app.clone(), "/v1/search?q=zebrafish&k=3&mode=bm25").await.results.is_empty());
    app.shutdown().unwrap();
    drop(app);

    // Rebuilt on restart from the stored chunks.
    let app = crate::fixtures::app(dir.path());
    let again = get(app.clone(), "/v1/search?q=finches%20garden&k=3&mode=bm25").await;
    assert_eq!(ids(&again.results), ["birds"]);
    assert!(get(app.clone(), "/v1/search?q=zebrafish&k=3&mode=bm25").await.results.is_empty());
    app.shutdown().unwrap();
}

/// Hybrid search fuses with `[search]`'s weights until a retrieval setting
/// is active: one promoted by another process (as `twinflow eval retrieval
/// --promote` does) applies within seconds without a restart; promotion
/// and rollback over HTTP apply at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_weights_follow_the_config_then_the_active_retrieval_setting() {
    use twinflow_schemas::api::RetrievalResponse;
    use twinflow_schemas::config::{Config, EmbedderConfig, HashingEmbedderConfig};
    use twinflow_schemas::training::Switched;
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut config = Config::default();
        config.storage.data_dir = dir.path().to_path_buf();
        config.engine.tick = std::time::Duration::from_millis(10);
        config.embedder = EmbedderConfig::Hashing(HashingEmbedderConfig::default());
        // Only the BM25 ranking counts, at 2 / (10 + rank): the defaults (1, 1, 60) give other scores.
        config.search.vector_weight = 0.0;
        config.search.bm25_weight = 2.0;
        config.search.lead_weight = 0.0;
        config.search.rrf_k = 10.0;
        config.auth.keys = crate::fixtures::test_keys();
        config
    };
    let app = twinflow_server::App::start(config()).unwrap();
    let body = (0..12)
        .map(|i| upsert_line(&format!("d{i}"), "T", &article(&format!("topic{i} harbour"), 2)))
        .collect::<Vec<_>>();
    let (status, _) = send(&app, post("/v1/documents?wait=true", "application/x-ndjson", body.join("\n"))).await;
    assert_eq!(status, StatusCode::OK);
    let results = |mode: &'static str| {
        let app = app.clone();
        async move {
            let uri = format!("/v1/search?q=harbour%20topic3&k=8&mode={mode}");
            let (_, body) = send(&app, Request::get(uri).body(Body::empty()).unwrap()).await;
            serde_json::from_slice::<SearchResponse>(&body).unwrap().results
        }
    };
    // Hybrid ranks as BM25 does, each hit scored `weight / (rrf_k + rank)`.
    let fused_as = |weight: f32, rrf_k: f32| {
        let results = results.clone();
        async move {
            let (hybrid, bm25) = (results("hybrid").await, results("bm25").await);
            assert_eq!(
                hybrid.iter().map(|h| h.chunk_id).collect::<Vec<_>>(),
                bm25.iter().map(|h| h.chunk_id).collect::<Vec<_>>()
            );
            hybrid.iter().enumerate().all(|(rank, hit)| (hit.score - weight / (rrf_k + rank as f32 + 1.0)).abs() < 1e-6)
        }
    };
    let retrieval = |app: std::sync::Arc<twinflow_server::App>| async move {
        let (status, body) = send(&app, Request::get("/v1/retrieval").body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<RetrievalResponse>(&body).unwrap()
    };
    assert!(fused_as(2.0, 10.0).await, "[search]'s weights");
    // One request may fuse otherwise: each parameter it gives replaces the active one's.
    let (own, bm25) = (results("hybrid&bm25_weight=4&rrf_k=7").await, results("bm25").await);
    assert_eq!(own.iter().map(|h| h.chunk_id).collect::<Vec<_>>(), bm25.iter().map(|h| h.chunk_id).collect::<Vec<_>>());
    assert!(own.iter().enumerate().all(|(rank, hit)| (hit.score - 4.0 / (7.0 + rank as f32 + 1.0)).abs() < 1e-6));
    for bad in [
        "hybrid&rrf_k=0",
        "hybrid&rrf_k=inf",
        "hybrid&bm25_weight=-1",
        "hybrid&bm25_weight=1000",
        "hybrid&lead_weight=NaN",
        "hybrid&bm25_weight=0",
        "hybrid&bm25_weight=two",
        "vector&bm25_weight=1",
    ] {
        let request = Request::get(format!("/v1/search?q=harbour&mode={bad}")).body(Body::empty()).unwrap();
        expect_error(&app, request, StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery).await;
    }
    assert!(fused_as(2.0, 10.0).await, "the next request fuses with [search]'s weights again");
    let listed = retrieval(app.clone()).await;
    assert_eq!((listed.active.as_str(), listed.versions.len()), ("base", 0));
    assert_eq!(listed.fusion, listed.configured);

    // Nothing to roll back; no such version; a read key may not switch.
    expect_error(
        &app,
        post("/v1/retrieval/rollback", "application/json", ""),
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
    )
    .await;
    expect_error(
        &app,
        post("/v1/retrieval/9/promote", "application/json", ""),
        StatusCode::NOT_FOUND,
        ErrorCode::ModelNotFound,
    )
    .await;
    let mut as_reader = post("/v1/retrieval/1/promote", "application/json", "");
    as_reader.headers_mut().insert("authorization", format!("Bearer {}", crate::fixtures::READ_KEY).parse().unwrap());
    let (status, _) = send(&app, as_reader).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Another process registers and promotes a setting: searches follow it.
    let registry = twinflow_models::Registry::<twinflow_models::RetrievalCard>::open(
        &dir.path().join("_models").join("retrieval"),
    )
    .unwrap();
    let card = registry.register(crate::fixtures::retrieval_card(3.0, 5.0), |_| Ok(()), &[]).unwrap();
    registry.promote(card.version, "promoted by another process").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while retrieval(app.clone()).await.active != "retrieval-v1" {
        assert!(std::time::Instant::now() < deadline, "the server never picked up retrieval-v1");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(fused_as(3.0, 5.0).await, "the active setting's weights");
    let listed = retrieval(app.clone()).await;
    assert_eq!((listed.versions.len(), listed.fusion.bm25_weight, listed.configured.bm25_weight), (1, 3.0, 2.0));

    // Over HTTP: rollback and promotion switch the next search.
    let (status, body) = send(&app, post("/v1/retrieval/rollback", "application/json", "")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(serde_json::from_slice::<Switched>(&body).unwrap().active, "base");
    assert!(fused_as(2.0, 10.0).await, "back to [search]'s weights");
    let (status, body) = send(&app, post("/v1/retrieval/1/promote", "application/json", "")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    assert_eq!(serde_json::from_slice::<Switched>(&body).unwrap().active, "retrieval-v1");
    assert!(fused_as(3.0, 5.0).await);
    let events = retrieval(app.clone()).await.events;
    assert_eq!(
        events.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["register", "promote", "rollback", "promote"]
    );
    app.shutdown().unwrap();

    // After a restart the active setting applies from the first search.
    let app = twinflow_server::App::start(config()).unwrap();
    assert_eq!(app.retrieval.current().0, Some(1));
    app.shutdown().unwrap();
}
