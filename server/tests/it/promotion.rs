//! Promotion on real held-out evidence: a corpus whose readers ask in other
//! words than the author writes (every word of a question spelled backwards,
//! a vocabulary the base encoder cannot bridge). Questions about the
//! training documents teach an adapter the mapping; questions about the
//! held-out documents, never trained on, judge it: recall@10 rises far
//! beyond the noise and the adapter is promoted. Templated instructions
//! (the words as written) train too, and judge nothing.

use axum::http::StatusCode;
use twinflow_dataflow::text::dataset::PROMPT_VERSION;
use twinflow_schemas::Split;
use twinflow_schemas::rng::SeededRng;

use crate::fixtures::{QuestionDouble, app_with, upsert_line};
use crate::router::{expect_error, post, send};
use twinflow_schemas::api::ErrorCode;

/// Questions of a test double (`QuestionDouble`) that uses the extract's words
/// spelled backwards: three questions about three different sets of its words.
fn backwards_questions(extract: &str) -> String {
    let words: Vec<String> = extract
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 4)
        .map(|w| w.chars().rev().collect())
        .collect();
    let at = |i: usize| words.get(i % words.len().max(1)).map_or("", String::as_str).to_owned();
    let n = words.len();
    format!(
        "1. What of {} {} {}?\n2. Where are {} {} {}?\n3. Why {} {} {}?",
        at(0),
        at(n / 4),
        at(n / 2),
        at(1),
        at(n / 3),
        at(3 * n / 4),
        at(2),
        at(2 * n / 3),
        at(n - 1)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_that_learns_the_readers_words_is_promoted_on_held_out_questions() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), |config| {
        config.drift.enabled = false;
        config.training.on_drift = false;
        // Free to move far from the identity: the mapping is a new vocabulary, not a nudge.
        config.training.identity_weight = 0.0;
        config.training.learning_rate = 1e-2;
        config.training.epochs = 40;
        config.training.batch_size = 32;
    });
    // 80 documents over a vocabulary of 120 made-up words, three paragraphs each.
    const SYLLABLES: &[&str] = &["ka", "lo", "mi", "ren", "tu", "sa", "vel", "dor", "pha", "gro", "ste", "bin"];
    let mut rng = SeededRng::new(0xb4c6);
    let vocabulary: Vec<String> =
        (0..120).map(|_| (0..3).map(|_| SYLLABLES[rng.index(SYLLABLES.len())]).collect()).collect();
    let body: String = (0..80)
        .map(|d| {
            let paragraphs: Vec<String> = (0..3)
                .map(|_| {
                    let words: Vec<&str> = (0..30).map(|_| vocabulary[rng.index(vocabulary.len())].as_str()).collect();
                    words.join(" ") + "."
                })
                .collect();
            upsert_line(&format!("note-{d:02}"), &format!("Note {d}"), &paragraphs.join("\n\n")) + "\n"
        })
        .collect();
    let (status, bytes) = send(&app, post("/v1/documents?wait=true", "application/x-ndjson", body)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));

    let run = app.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let double = QuestionDouble::new("backwards-questions-test-double", backwards_questions, "It depends.");
        let written = run.training.datasets.generate_for(&run.store, &double, 10_000, Some(Split::Test))?;
        assert!(written.generated > 0 && written.failures == 0, "{written:?}");
        run.training.run(serde_json::json!("manual"))
    })
    .await
    .unwrap()
    .expect("the run completes");
    eprintln!("outcome: {}", serde_json::to_string_pretty(&outcome).unwrap_or_default());
    let evaluation = &outcome.evaluation;
    assert_eq!(evaluation.evidence, vec![format!("llm:backwards-questions-test-double@p{PROMPT_VERSION}")]);
    assert!(evaluation.queries >= 20, "{evaluation:?}");
    let gain = evaluation.gain.expect("judged");
    assert!(evaluation.base < 0.3, "backwards words are beyond the base encoder: {evaluation:?}");
    assert!(gain.above_zero() && gain.mean > 0.15, "the adapter learned the mapping: {gain} ({evaluation:?})");
    assert!(outcome.promoted && outcome.decision.starts_with("promoted"), "{}", outcome.decision);
    assert_eq!(app.training.registry.active().unwrap(), Some(1));
    assert_eq!(app.store.projection().as_deref(), Some("adapter-v1"));

    // The judgement is in the evaluations table: over HTTP, and in SQL.
    let (status, bytes) = send(&app, get("/v1/evals?kind=adapter-run&metric=gain")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let evals: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let rows = evals["evaluations"].as_array().unwrap();
    assert_eq!((rows.len(), evals["matched"].as_u64()), (1, Some(1)), "{evals}");
    assert_eq!(rows[0]["model"], "adapter-v1");
    assert_eq!(rows[0]["setting"], "recall@10 over base");
    assert_eq!(rows[0]["question_set"], format!("instruct-v{}", outcome.dataset.version));
    assert_eq!(rows[0]["queries"].as_u64(), Some(evaluation.queries as u64));
    assert!((rows[0]["low"].as_f64().unwrap() - gain.low).abs() < 1e-12, "{evals}");
    let (status, bytes) = send(&app, get("/v1/evals?kind=adapter-run")).await;
    assert_eq!(status, StatusCode::OK);
    let all: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let models: Vec<&str> =
        all["evaluations"].as_array().unwrap().iter().map(|r| r["model"].as_str().unwrap()).collect();
    assert_eq!(models, ["base", "adapter-v1", "adapter-v1"], "recall@10 of each, then the gain: {all}");
    let answer =
        app.store.sql("SELECT model, value FROM evaluations WHERE metric = 'recall@10' ORDER BY value").await.unwrap();
    let values = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(answer.batches[0].column(1));
    assert_eq!(values.len(), 2);
    assert!(
        (values.value(0) - evaluation.base).abs() < 1e-12 && (values.value(1) - evaluation.candidate).abs() < 1e-12
    );
    for bad in ["/v1/evals?limit=0", "/v1/evals?limit=10001", "/v1/evals?limit=many"] {
        expect_error(&app, get(bad), StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery).await;
    }
}

fn get(uri: &str) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::get(uri).body(axum::body::Body::empty()).unwrap()
}
