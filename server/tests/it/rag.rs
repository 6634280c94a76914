//! Answers over a real socket with the real SmolLM2 generator: `/v1/rag`,
//! `/v1/chat/completions` (plain and streamed, read with an SSE parser), the
//! OpenAI-compatible generator client against a local server, and every bad
//! request as a 4xx with a stable code.

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::sync::Arc;

use serde_json::{Value, json};
use twinflow_models::{ChatMessage, GenerateParams, Generator};
use twinflow_pipelines::inference::OpenAiGenerator;
use twinflow_schemas::api::{ErrorBody, ErrorCode, RagResponse};
use twinflow_schemas::config::OpenAiGeneratorConfig;
use twinflow_server::App;

use crate::fixtures::app_with;

/// A server on a free port, stopped when dropped.
struct Served {
    base: String,
    app: Arc<App>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: tokio::runtime::Runtime,
}

impl Served {
    fn start(app: Arc<App>, router: axum::Router) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        runtime.spawn(
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .into_future(),
        );
        Self { base, app, stop: Some(stop), runtime }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.app.shutdown();
        let _ = &self.runtime;
    }
}

fn post(base: &str, path: &str, body: &Value) -> reqwest::blocking::Response {
    crate::fixtures::http().post(format!("{base}{path}")).json(body).send().unwrap()
}

fn expect_error(base: &str, path: &str, body: &Value, status: u16, code: ErrorCode) {
    let response = post(base, path, body);
    assert_eq!(response.status().as_u16(), status, "{body}");
    let error: ErrorBody = response.json().unwrap();
    assert_eq!(error.error.code, code, "{body}");
}

/// Every `data:` payload of an SSE body, in order.
fn sse_events(response: reqwest::blocking::Response) -> Vec<String> {
    BufReader::new(response)
        .lines()
        .map(Result::unwrap)
        .filter_map(|line| line.strip_prefix("data:").map(|d| d.trim().to_owned()))
        .collect()
}

/// An app (one query expansion) serving three documents by two authors.
fn corpus_server(dir: &std::path::Path) -> Served {
    let app = app_with(dir, |config| config.rag.expansions = 1);
    let served = Served::start(app.clone(), twinflow_server::router(app));
    let docs = [
        (
            "france",
            "Ada Lovelace",
            "France",
            "Paris is the capital of France. The city lies on the river Seine and is home to the Louvre.",
        ),
        (
            "ships",
            "Grace Hopper",
            "Ships",
            "Ships carry containers across the oceans. A harbour shelters ships from storms.",
        ),
        ("taxes", "Grace Hopper", "Taxes", "Taxes fund the budget of the state. Tariffs are taxes on imported goods."),
    ];
    let body: String = docs
        .iter()
        .map(|(id, author, title, content)| {
            json!({"op": "upsert", "doc_id": id, "kind": "article", "author": author, "title": title,
                   "url": format!("https://example.com/{id}"), "content": content})
            .to_string()
                + "\n"
        })
        .collect();
    let response = crate::fixtures::http()
        .post(format!("{}/v1/documents?wait=true", served.base))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    served
}

#[test]
fn rag_and_chat_completions_answer_from_the_index_with_citations() {
    let dir = tempfile::tempdir().unwrap();
    let served = corpus_server(dir.path());
    let base = &served.base;

    let response = post(base, "/v1/rag", &json!({"query": "What is the capital of France?", "k": 2}));
    assert_eq!(response.status(), 200);
    let rag: RagResponse = response.json().unwrap();
    assert!(rag.answer.contains("Paris"), "{rag:?}");
    // Grounded: the answer cites the passage that says it, whatever the generator did with markers.
    assert!(rag.grounding.is_some() && rag.timings.grounding_ms > 0.0, "{rag:?}");
    assert!(rag.citations.iter().any(|c| c.cited && c.doc_id == "france"), "{rag:?}");
    assert!(rag.as_of >= 1);
    assert_eq!(rag.queries.len(), 2, "the question and one expansion: {:?}", rag.queries);
    assert!(!rag.citations.is_empty() && rag.citations.len() <= 2);
    assert_eq!(rag.citations[0].doc_id, "france", "{:?}", rag.citations);
    for (i, c) in rag.citations.iter().enumerate() {
        assert_eq!(c.marker, i + 1, "markers number the prompt's passages");
    }
    assert!(rag.timings.generation_ms > 0.0 && rag.timings.total_ms >= rag.timings.generation_ms);
    assert!(rag.usage.completion_tokens > 0);

    // Self-query: a surname only one author has becomes a filter.
    let rag: RagResponse =
        post(base, "/v1/rag", &json!({"query": "What did Lovelace write about the capital?"})).json().unwrap();
    assert_eq!(rag.filters.author.as_deref(), Some("Ada Lovelace"));
    assert!(rag.citations.iter().all(|c| c.author == "Ada Lovelace"), "{:?}", rag.citations);

    // Chat completions, as an OpenAI client sends them.
    let request = json!({
        "model": "twinflow",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 48, "temperature": 0, "user": "test",
    });
    let plain: Value = post(base, "/v1/chat/completions", &request).json().unwrap();
    assert_eq!(plain["object"], "chat.completion");
    let content = plain["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert!(content.contains("Paris"), "{plain}");
    assert!(plain["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert!(plain["twinflow"]["citations"].as_array().is_some_and(|c| !c.is_empty()));

    let mut streamed_request = request.clone();
    streamed_request["stream"] = json!(true);
    streamed_request["stream_options"] = json!({"include_usage": true});
    let response = post(base, "/v1/chat/completions", &streamed_request);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let events = sse_events(response);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String =
        chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(str::to_owned)).collect();
    let raw = plain["twinflow"]["grounding"]["raw_answer"].as_str().unwrap();
    assert_eq!(text, raw, "greedy: the stream adds up to the plain answer as generated (the stream is not grounded)");
    assert!(chunks.iter().any(|c| c["choices"].get(0).is_some_and(|ch| ch["finish_reason"] == "stop")));
    assert!(chunks.last().unwrap()["usage"]["total_tokens"].as_u64().unwrap() > 0);

    // twinflow is itself an OpenAI-compatible endpoint: the remote generator can call it.
    let remote = OpenAiGenerator::new(OpenAiGeneratorConfig {
        url: format!("{base}/v1"),
        model: "twinflow".into(),
        ..OpenAiGeneratorConfig::default()
    })
    .unwrap()
    .with_api_key(crate::fixtures::READ_KEY);
    let mut pieces = Vec::new();
    let generation = remote
        .generate(
            &[ChatMessage::new("user", "What is the capital of France?")],
            &GenerateParams { max_tokens: 48, ..GenerateParams::default() },
            &mut |p| {
                pieces.push(p.to_owned());
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    assert_eq!(generation.text, raw, "it streams, so it gets the answer as generated");
    assert!(pieces.len() > 1, "streamed piece by piece");

    // Prompt monitoring: every answer above (2 RAG, 3 chat) is a row of `traces`, written by the flusher.
    let traces = |app: &App| -> Vec<Value> {
        let sql = "SELECT question, model, retrieved, prompt_tokens, completion_tokens, as_of, total_ms FROM traces ORDER BY at_ms";
        let answer = served.runtime.block_on(app.store.sql(sql)).unwrap();
        twinflow_sinks::encode_json_rows(&answer.batches).unwrap().into_iter().map(Value::Object).collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while traces(&served.app).len() < 5 {
        assert!(std::time::Instant::now() < deadline, "traces: {:?}", traces(&served.app));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let rows = traces(&served.app);
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert_eq!(rows[0]["question"], "What is the capital of France?");
    assert!(rows.iter().all(|r| r["prompt_tokens"].as_u64() > Some(0) && r["total_ms"].as_f64() > Some(0.0)));
    assert!(rows[0]["retrieved"].as_str().unwrap().contains("\"cited\""), "{}", rows[0]["retrieved"]);
    assert_eq!(rows[0]["model"], rag.model);

    // Extractive: nothing generated; from each of the first passages, its sentence closest to the question.
    let asked = json!({"query": "What is the capital of France?", "k": 2, "answer": "extractive"});
    let rag: RagResponse = post(base, "/v1/rag", &asked).json().unwrap();
    assert_eq!((rag.model.as_str(), rag.usage.completion_tokens), ("extractive", 0));
    assert!(rag.answer.starts_with("\u{201c}Paris is the capital of France.\u{201d} [1]"), "{rag:?}");
    assert_eq!(rag.grounding.as_ref().map(|g| g.mode.as_str()), Some("extractive"));
    assert!(rag.citations[0].cited && rag.citations[0].doc_id == "france", "{:?}", rag.citations);
    expect_error(base, "/v1/rag", &json!({"query": "capital?", "answer": "poem"}), 400, ErrorCode::InvalidField);
}

#[test]
fn bad_requests_are_4xx_with_stable_codes() {
    let dir = tempfile::tempdir().unwrap();
    let served = corpus_server(dir.path());
    let base = &served.base;
    expect_error(base, "/v1/rag", &json!({"query": "  "}), 400, ErrorCode::InvalidField);
    expect_error(base, "/v1/rag", &json!({"k": 3}), 400, ErrorCode::MissingField);
    expect_error(base, "/v1/rag", &json!({"query": "x", "k": 0}), 400, ErrorCode::InvalidField);
    expect_error(base, "/v1/rag", &json!({"query": "x", "temperature": 9}), 400, ErrorCode::InvalidField);
    expect_error(base, "/v1/rag", &json!({"query": "x", "filters": {"kind": "poem"}}), 400, ErrorCode::InvalidField);
    expect_error(base, "/v1/rag", &json!({"query": "x", "surprise": 1}), 400, ErrorCode::InvalidField);
    // A question that cannot fit the 2,048-token context with its answer.
    let long = "why ".repeat(2000);
    expect_error(base, "/v1/rag", &json!({"query": long}), 400, ErrorCode::ContextLengthExceeded);
    let chat = |messages: Value| json!({"messages": messages});
    expect_error(base, "/v1/chat/completions", &chat(json!([])), 400, ErrorCode::InvalidField);
    expect_error(
        base,
        "/v1/chat/completions",
        &chat(json!([{"role": "assistant", "content": "hi"}])),
        400,
        ErrorCode::InvalidField,
    );
    expect_error(
        base,
        "/v1/chat/completions",
        &chat(json!([{"role": "tool", "content": "hi"}])),
        400,
        ErrorCode::InvalidField,
    );
    expect_error(
        base,
        "/v1/chat/completions",
        &json!({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}),
        404,
        ErrorCode::ModelNotFound,
    );
    expect_error(
        base,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
        400,
        ErrorCode::InvalidField,
    );
    let response = crate::fixtures::http()
        .post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[test]
fn the_openai_generator_reads_streams_and_reports_failures() {
    use axum::routing::post as route_post;
    // A stand-in OpenAI server: one route streams two pieces, the other fails.
    let router = axum::Router::new()
        .route(
            "/ok/v1/chat/completions",
            route_post(|body: axum::Json<Value>| async move {
                assert_eq!(body["stream"], true);
                assert_eq!(body["model"], "tiny");
                let events = [
                    json!({"choices": [{"delta": {"role": "assistant"}, "finish_reason": null}]}),
                    json!({"choices": [{"delta": {"content": "Hel"}, "finish_reason": null}]}),
                    json!({"choices": [{"delta": {"content": "lo"}, "finish_reason": "length"}]}),
                    json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}),
                ];
                let body: String =
                    events.iter().map(|e| format!("data: {e}\n\n")).collect::<String>() + "data: [DONE]\n\n";
                ([("content-type", "text/event-stream")], body)
            }),
        )
        .route(
            "/down/v1/chat/completions",
            route_post(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "overloaded") }),
        );
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(crate::fixtures::app(dir.path()), router);
    let generator = |path: &str| {
        OpenAiGenerator::new(OpenAiGeneratorConfig {
            url: format!("{}{path}/v1", served.base),
            model: "tiny".into(),
            api_key_env: None,
            ..OpenAiGeneratorConfig::default()
        })
        .unwrap()
    };
    let mut pieces = Vec::new();
    let generation = generator("/ok")
        .generate(&[ChatMessage::new("user", "hi")], &GenerateParams::default(), &mut |p| {
            pieces.push(p.to_owned());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(pieces, ["Hel", "lo"]);
    assert_eq!(generation.text, "Hello");
    assert_eq!(generation.finish_reason, twinflow_models::FinishReason::Length);
    assert_eq!((generation.prompt_tokens, generation.completion_tokens), (7, 2));
    let err = generator("/down")
        .generate(&[ChatMessage::new("user", "hi")], &GenerateParams::default(), &mut |_| ControlFlow::Continue(()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("503") && err.contains("overloaded"), "{err}");
}

/// A RAG request as a `rag` span (question size, k, the epoch answered
/// at) whose children are its steps, each closing with its busy time; the
/// generator is a stand-in OpenAI endpoint.
#[test]
fn a_rag_request_is_a_span_with_one_child_per_step() {
    use std::sync::Mutex;
    use tracing_subscriber::fmt::format::FmtSpan;

    let router = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(|| async {
            let events = [
                json!({"choices": [{"delta": {"content": "Boats [1]."}, "finish_reason": "stop"}]}),
                json!({"choices": [], "usage": {"prompt_tokens": 40, "completion_tokens": 3, "total_tokens": 43}}),
            ];
            let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect::<String>() + "data: [DONE]\n\n";
            ([("content-type", "text/event-stream")], body)
        }),
    );
    let stub_dir = tempfile::tempdir().unwrap();
    let stub = Served::start(crate::fixtures::app(stub_dir.path()), router);
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), |config| {
        config.generator = twinflow_schemas::config::GeneratorConfig::Openai(OpenAiGeneratorConfig {
            url: format!("{}/v1", stub.base),
            model: "tiny".into(),
            api_key_env: None,
            ..OpenAiGeneratorConfig::default()
        });
    });
    let line = crate::fixtures::upsert_line("boats", "Boats", &crate::fixtures::article("boats and harbours", 4));
    let change = twinflow_schemas::parse_change(line.as_bytes(), 1, &Default::default()).unwrap();
    let epoch = app.engine().unwrap().submit(vec![change]).unwrap();
    app.engine().unwrap().flush();
    assert!(app.engine().unwrap().wait_committed(epoch, std::time::Duration::from_secs(60)));

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_span_events(FmtSpan::CLOSE)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .finish();
    let question = twinflow_pipelines::inference::RagQuestion {
        question: "Where do the boats rest?".into(),
        history: Vec::new(),
        system: None,
        filter: Default::default(),
        k: 3,
        params: GenerateParams::default(),
        answer: Default::default(),
    };
    let answer = tracing::subscriber::with_default(subscriber, || {
        twinflow_pipelines::inference::answer(&app.rag(), &question, &mut |_| ControlFlow::Continue(())).unwrap()
    });
    // The generator's answer, then grounded: what is left cites the passages it keeps.
    let grounding = answer.grounding.as_ref().expect("grounded by default");
    assert_eq!(grounding.raw_answer, "Boats [1].");
    assert!(answer.citations.iter().filter(|c| c.cited).all(|c| answer.answer.contains(&format!("[{}]", c.marker))));
    assert!(answer.citations.iter().any(|c| c.cited), "{answer:?}");

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let closes: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["fields"]["message"] == "close")
        .collect();
    let names: Vec<&str> = closes.iter().filter_map(|e| e["span"]["name"].as_str()).collect();
    assert_eq!(names, ["self_query", "expansion", "retrieval", "rerank", "prompt", "generate", "rag"], "{log}");
    let rag = closes.last().unwrap();
    assert_eq!(rag["span"]["k"], 3);
    assert_eq!(rag["span"]["as_of"], epoch, "{rag}");
    assert!(closes.iter().all(|e| e["fields"]["time.busy"].is_string()), "{log}");
    // The steps are the request's children.
    assert!(closes[..6].iter().all(|e| e["spans"][0]["name"] == "rag"), "{log}");
    app.shutdown().unwrap();
}
