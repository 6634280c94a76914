//! Time travel over HTTP: `/v1/search?as_of=` and `/v1/rag {"as_of"}` answer
//! from the state of a past epoch — the same hits, and with temperature 0 the
//! same generated answer, after edits and deletes — and an epoch outside the
//! window (`[storage] time_travel`) is a 400 naming the oldest available,
//! for SQL's `AS OF` too.

use std::time::Duration;

use serde_json::{Value, json};
use twinflow_schemas::{ChangeLimits, parse_change};

use crate::fixtures::{app, article, http, upsert_line};

#[test]
fn search_and_answers_read_a_past_epoch_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path());
    let ingest = |lines: &[String]| {
        let changes = lines.iter().map(|l| parse_change(l.as_bytes(), 1, &ChangeLimits::default()).unwrap()).collect();
        let epoch = app.engine().unwrap().submit(changes).unwrap();
        app.engine().unwrap().flush();
        assert!(app.engine().unwrap().wait_committed(epoch, Duration::from_secs(60)));
        epoch
    };
    let first = ingest(&[
        upsert_line("rivers", "Rivers", &article("rivers and boats", 6)),
        upsert_line("taxes", "Taxes", &article("taxes and budgets", 6)),
    ]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = twinflow_server::router(app.clone());
    runtime.spawn(async move { axum::serve(listener, router).await });
    let client = http();
    let search = |as_of: Option<u64>| -> Value {
        let mut url = format!("{base}/v1/search?q=rivers%20and%20boats&k=4");
        if let Some(epoch) = as_of {
            url.push_str(&format!("&as_of={epoch}"));
        }
        let response = client.get(url).send().unwrap();
        assert_eq!(response.status(), 200);
        response.json().unwrap()
    };
    let ask = |as_of: Option<u64>| -> Value {
        let body =
            json!({ "query": "What carries the boats?", "k": 2, "temperature": 0.0, "max_tokens": 24, "as_of": as_of });
        let response = client.post(format!("{base}/v1/rag")).json(&body).send().unwrap();
        assert_eq!(response.status(), 200);
        response.json().unwrap()
    };
    let hits = |answer: &Value| answer["results"].clone();
    let before = search(None);
    let answered = ask(None);
    assert_eq!((before["as_of"].as_u64(), answered["as_of"].as_u64()), (Some(first), Some(first)));

    // Edits and a delete later, the past epoch answers as it did.
    ingest(&[upsert_line("rivers", "Rivers", &article("rivers and canals and locks", 6))]);
    let last = ingest(&[json!({ "op": "delete", "doc_id": "taxes" }).to_string()]);
    assert_ne!(hits(&search(None)), hits(&before), "the live index moved on");
    let past = search(Some(first));
    assert_eq!(past["as_of"].as_u64(), Some(first));
    assert_eq!(hits(&past), hits(&before));
    let again = ask(Some(first));
    assert_eq!(again["as_of"].as_u64(), Some(first));
    assert_eq!(again["answer"], answered["answer"], "temperature 0 on the same state: the same answer");
    assert_eq!(again["citations"], answered["citations"]);
    assert_eq!(search(Some(last))["as_of"].as_u64(), Some(last), "the newest epoch is the live index");

    // Outside the window: a 400 naming what is available.
    let refused = |url: String| -> Value {
        let response = client.get(url).send().unwrap();
        assert_eq!(response.status(), 400);
        response.json().unwrap()
    };
    let error = refused(format!("{base}/v1/search?q=rivers&as_of={}", last + 5));
    assert_eq!(error["error"]["code"], "epoch_unavailable");
    assert!(error["error"]["message"].as_str().unwrap().contains(&format!("the newest {last}")), "{error}");
    app.store.set_time_travel(Some(Duration::from_millis(1)));
    std::thread::sleep(Duration::from_millis(20));
    let error = refused(format!("{base}/v1/search?q=rivers&as_of={first}"));
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains(&format!("the oldest available epoch is {last}")), "{message}");
    let response = client.post(format!("{base}/v1/rag")).json(&json!({ "query": "boats", "as_of": first })).send();
    let response = response.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().unwrap()["error"]["code"], "epoch_unavailable");
    let sql = json!({ "sql": format!("SELECT count(*) AS n FROM chunks AS OF EPOCH {first}") });
    let response = client.post(format!("{base}/v1/sql")).json(&sql).send().unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().unwrap();
    assert!(
        error["error"]["message"].as_str().unwrap().contains(&format!("oldest available epoch is {last}")),
        "{error}"
    );
    app.shutdown().unwrap();
}
