//! End to end over a real socket, with the project's own HTTP client.

use std::time::Duration;

use twinflow_schemas::api::SqlFormat;
use twinflow_server::client::Client;

use crate::fixtures::{app, article, upsert_line};

#[test]
fn over_a_real_socket() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = runtime.spawn(
        axum::serve(listener, twinflow_server::router(app.clone()))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );

    let client = Client::with_key(&format!("http://{addr}"), Some(crate::fixtures::ADMIN_KEY)).unwrap();
    let body = format!("{}\n", upsert_line("s1", "Sockets", &article("sockets and ports", 20)));
    let response = client.ingest(body.into_bytes(), true).unwrap();
    assert!(response.committed && response.accepted == 1);
    let hits = client.search("ports", 2).unwrap();
    assert_eq!(hits.results[0].sources[0].doc_id, "s1");
    let csv = client.sql("SELECT COUNT(*) AS n FROM chunks_changes WHERE _diff > 0", SqlFormat::Csv).unwrap();
    let n: usize = String::from_utf8(csv).unwrap().lines().nth(1).unwrap().parse().unwrap();
    assert!(n >= 2, "the article has several chunks in the change log, got {n}");
    let error = client.ingest(b"{not json".to_vec(), false).unwrap_err().to_string();
    assert!(error.contains("InvalidJson"), "{error}");

    let _ = stop.send(());
    runtime.block_on(server).unwrap().unwrap();
    app.shutdown().unwrap();
    drop(runtime);
    std::thread::sleep(Duration::from_millis(10));
}
