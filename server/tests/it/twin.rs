//! The LLM twin over HTTP with the real SmolLM2: a corpus written in one
//! voice, a LoRA fine-tuning run on its instruct dataset (SFT, then DPO on
//! the preference pairs: one version per stage), the held-out evaluation,
//! the switch of the answering model, rollback, promotion, a restart, and
//! the errors of each endpoint.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use twinflow_models::{GenerateParams, Generator};
use twinflow_schemas::api::ErrorCode;
use twinflow_schemas::config::{GeneratorConfig, OpenAiGeneratorConfig};
use twinflow_schemas::rng::SeededRng;

use twinflow_dataflow::text::dataset::PROMPT_VERSION;
use twinflow_pipelines::training::evaluation::evaluate_twin;
use twinflow_schemas::Split;

use crate::fixtures::{QuestionDouble, app_with, upsert_line};
use crate::router::{expect_error, post, send};

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// `twinflow twin export <version> --format <format> --out <out>` on the data directory `data`.
fn export(data: &std::path::Path, version: &str, format: &str, out: &std::path::Path) -> Value {
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_twinflow"))
        .args(["twin", "export", version.trim_start_matches("twin-"), "--format", format, "--out"])
        .arg(out)
        .env("TWINFLOW__STORAGE__DATA_DIR", data)
        .output()
        .unwrap();
    assert!(run.status.success(), "export failed: {}", String::from_utf8_lossy(&run.stderr));
    serde_json::from_slice(&run.stdout).unwrap()
}

/// Greedy first tokens of the answering model to `question`, and its name.
async fn answer(app: &std::sync::Arc<twinflow_server::App>, question: &str) -> (String, String) {
    let app = app.clone();
    let question = question.to_owned();
    tokio::task::spawn_blocking(move || {
        let generator = app.generator.get().unwrap();
        let params = GenerateParams { max_tokens: 5, temperature: 0.0, ..GenerateParams::default() };
        let messages = [twinflow_models::ChatMessage::new("user", question)];
        let generation = generator.generate(&messages, &params, &mut |_| ControlFlow::Continue(())).unwrap();
        (generator.model_name().to_owned(), generation.text)
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twin_fine_tunes_switches_rolls_back_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let configure = |config: &mut twinflow_schemas::config::Config| {
        config.drift.enabled = false;
        config.training.on_drift = false;
        config.twin.max_examples = 16;
        config.twin.max_test = 4;
        // Four held-out answers judge this small run (30 by default).
        config.training.min_questions = 4;
        config.twin.max_tokens = 96;
        config.twin.epochs = 2;
        config.twin.learning_rate = 2e-3;
    };
    let app = app_with(dir.path(), configure);

    expect_error(&app, post("/v1/twin/rollback", "application/json", ""), StatusCode::NOT_FOUND, ErrorCode::NotFound)
        .await;
    expect_error(
        &app,
        post("/v1/twin/versions/3/promote", "application/json", ""),
        StatusCode::NOT_FOUND,
        ErrorCode::ModelNotFound,
    )
    .await;

    // Forty documents in one voice: a fixed greeting and sign-off around varied words.
    let vocabulary = [
        "rivers", "taxes", "ships", "farms", "roads", "mines", "banks", "forts", "ports", "mills", "courts", "schools",
        "wheat", "cotton", "iron", "coal", "treaty", "navy", "army", "tariff", "credit", "debt", "harbour", "canal",
    ];
    let mut rng = SeededRng::new(11);
    let mut word = move || vocabulary[rng.index(vocabulary.len())];
    let body: String = (0..40)
        .map(|i| {
            let paragraphs: Vec<String> = (0..2)
                .map(|_| {
                    let middle = (0..40).map(|_| word()).collect::<Vec<_>>().join(" ");
                    format!("Hark, good neighbour! {middle}. So speaks the keeper of the valley.")
                })
                .collect();
            upsert_line(&format!("doc-{i}"), &format!("Letter {i}"), &paragraphs.join("\n\n")) + "\n"
        })
        .collect();
    let (status, bytes) = send(&app, post("/v1/documents?wait=true", "application/x-ndjson", body)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    let (base_name, base_answer) = answer(&app, "Tell me about the harbour.").await;
    // Questions about the letters (a test double standing in for the LLM): the held-out
    // letters' questions are what the run is judged on; templated instructions never judge.
    let writer = app.clone();
    let written = tokio::task::spawn_blocking(move || {
        writer.training.datasets.generate_for(&writer.store, &QuestionDouble::keywords(), 1000, Some(Split::Test))
    })
    .await
    .unwrap()
    .unwrap();
    assert!(written.generated > 0, "{written:?}");

    let (status, bytes) = send(&app, post("/v1/twin/train", "application/json", "")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&bytes));
    expect_error(
        &app,
        post("/v1/twin/train", "application/json", ""),
        StatusCode::CONFLICT,
        ErrorCode::TrainingRunning,
    )
    .await;
    let started = Instant::now();
    let twin = loop {
        let (_, bytes) = send(&app, get("/v1/twin")).await;
        let twin = json(&bytes);
        if twin["training"]["runs"] == 1 {
            break twin;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "the run did not finish: {twin}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "twin run: {:.1} s; sft: {}; dpo: {}",
        started.elapsed().as_secs_f64(),
        twin["versions"][0]["decision"],
        twin["versions"][1]["decision"]
    );
    assert!(twin["training"]["last_error"].is_null(), "{twin}");
    let card = &twin["versions"][0];
    assert_eq!(card["kind"], "llm-lora");
    assert_eq!(card["dataset"]["version"], 1);
    assert_eq!(card["report"]["steps"], 8, "16 examples, batches of 4, 2 epochs: {card}");
    let (base_nll, candidate_nll) = (
        card["evaluation"]["base"]["mean"].as_f64().unwrap(),
        card["evaluation"]["candidate"]["mean"].as_f64().unwrap(),
    );
    assert!(candidate_nll < 0.8 * base_nll, "held-out nll {base_nll} → {candidate_nll}");
    assert!(card["evaluation"]["gain"]["low"].as_f64().is_some_and(|low| low > 0.0), "{card}");
    assert_eq!(card["evaluation"]["evidence"][0], format!("llm:keyword-questions-test-double@p{PROMPT_VERSION}"));
    assert_eq!(card["promotable"], true);

    // The DPO stage on top of it: its own version, its parent the SFT stage,
    // judged on held-out pairs against it (its reference).
    let dpo = &twin["versions"][1];
    assert_eq!(
        (&dpo["kind"], &dpo["parent"], &dpo["training"]["technique"]),
        (&"llm-lora-dpo".into(), &1.into(), &"dpo".into())
    );
    assert_eq!(dpo["report"]["steps"], 8, "16 pairs, batches of 4, 2 epochs: {dpo}");
    let preference = &dpo["evaluation"]["preference"];
    assert_eq!(preference["pairs"], 4, "{dpo}");
    assert!(preference["reward_accuracy"].as_f64().is_some_and(|a| a >= 0.75), "{dpo}");
    assert!(preference["gain"]["mean"].as_f64().is_some_and(|m| m > 0.0), "{dpo}");
    let active = if dpo["promotable"] == true { "twin-v2" } else { "twin-v1" };
    assert_eq!(twin["active"], active, "{twin}");
    assert!(twin["answering"].as_str().is_some_and(|n| n.ends_with(&format!("+{active}"))), "{twin}");

    // `eval twin`'s measures on the same held-out data: the twin is the likelier author.
    let scorer = app.clone();
    let report = tokio::task::spawn_blocking(move || {
        let (gguf, _) = scorer.generator.local_gguf().unwrap();
        let trainer = twinflow_models::LoraTrainer::load(&gguf, 96, &twinflow_models::cpu_device()).unwrap();
        let data = scorer.store.data_dir();
        let samples = twinflow_sinks::datasets::read_instruct_version(data, 1).unwrap();
        let preference = twinflow_sinks::datasets::read_preference_version(data, 1).unwrap();
        let models = [("base".to_owned(), None), ("twin-v1".to_owned(), Some(scorer.twin.registry.lora(1).unwrap()))];
        evaluate_twin(&trainer, 1, &samples, &preference, &models, 4).unwrap()
    })
    .await
    .unwrap();
    eprintln!("eval twin: {}", serde_json::to_string(&report).unwrap());
    let [base, tuned] = [&report.models[0], &report.models[1]];
    assert!(report.answers > 0 && report.preference_pairs > 0, "{report:?}");
    assert!(tuned.nll.mean < base.nll.mean, "{report:?}");
    assert!(
        tuned.preference_accuracy.mean > base.preference_accuracy.mean,
        "the author's text over the other answer: {report:?}"
    );

    // Exported for other runtimes: the merged GGUF answers in the author's voice through our
    // loader; the safetensors export runs in the NumPy reference as the twin does here.
    let exports = tempfile::tempdir().unwrap();
    let exported = export(dir.path(), active, "gguf", &exports.path().join("gguf"));
    let gguf = exported["files"][0].as_str().unwrap().to_owned();
    assert!(gguf.ends_with(&format!("+{active}.gguf")), "{exported}");
    assert!(
        exported["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().ends_with("adapter/adapter_config.json"))
    );
    let hf = exports.path().join("hf");
    export(dir.path(), active, "safetensors", &hf);
    let merged = app.clone();
    let (exported_text, ours, reference) = tokio::task::spawn_blocking(move || {
        let device = twinflow_models::cpu_device();
        let llm = twinflow_models::LocalLlm::load(std::path::Path::new(&gguf), 2048, &device).unwrap();
        let params = GenerateParams { max_tokens: 5, temperature: 0.0, ..GenerateParams::default() };
        let messages = [twinflow_models::ChatMessage::new("user", "Tell me about the harbour.")];
        let text = llm.generate(&messages, &params, &mut |_| ControlFlow::Continue(())).unwrap().text;
        // The served twin's logits after a short prompt, and the reference's on the export.
        let ids = [1u32, 504, 3458, 282, 260, 7133];
        let (base, _) = merged.generator.local_gguf().unwrap();
        let mut twin = twinflow_models::LocalLlm::load(&base, 2048, &device).unwrap();
        let version: u64 = active.trim_start_matches("twin-v").parse().unwrap();
        twin.merge_lora(&merged.twin.registry.lora(version).unwrap(), "twin").unwrap();
        let ours = twin.model().step(&ids, &mut twinflow_models::llama::KvCache::default()).unwrap();
        let out = hf.join("logits.f32");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/tests/data/reference_forward.py");
        let run = std::process::Command::new("python3")
            .arg(script)
            .arg(&hf)
            .arg(serde_json::to_string(&ids).unwrap())
            .arg(&out)
            .output()
            .unwrap();
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        let values: Vec<f32> = std::fs::read(&out)
            .unwrap()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (text, ours.clone(), values[values.len() - ours.len()..].to_vec())
    })
    .await
    .unwrap();
    assert!(exported_text.starts_with("Hark"), "the exported twin: {exported_text:?}");
    let diff = ours.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(diff < 2e-2, "the safetensors export's logits differ from the twin's by {diff}");

    // The twin answers now, in the author's voice.
    let (name, text) = answer(&app, "Tell me about the harbour.").await;
    assert_eq!(name, format!("{base_name}+{active}"));
    assert!(text.starts_with("Hark"), "twin: {text:?}; base: {base_answer:?}");
    assert!(!base_answer.starts_with("Hark"), "{base_answer:?}");

    // Rollback (through the SFT stage when the DPO stage is active) to the base model, promotion back.
    let mut rolled = Value::Null;
    for _ in 0..2 {
        let (status, bytes) = send(&app, post("/v1/twin/rollback", "application/json", "")).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
        rolled = json(&bytes)["active"].clone();
        if rolled == "base" {
            break;
        }
        assert_eq!(rolled, "twin-v1");
    }
    assert_eq!(rolled, "base");
    assert_eq!(answer(&app, "Tell me about the harbour.").await.0, base_name);
    let (status, bytes) = send(&app, post("/v1/twin/versions/1/promote", "application/json", "")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(answer(&app, "Tell me about the harbour.").await.0, format!("{base_name}+twin-v1"));

    // A restart keeps the active twin.
    app.shutdown().unwrap();
    drop(app);
    let app = app_with(dir.path(), configure);
    let (_, bytes) = send(&app, get("/v1/twin")).await;
    assert_eq!(json(&bytes)["active"], "twin-v1");
    let (name, text) = answer(&app, "Tell me about the harbour.").await;
    assert_eq!(name, format!("{base_name}+twin-v1"));
    assert!(text.starts_with("Hark"), "{text:?}");
    app.shutdown().unwrap();

    // An OpenAI-compatible generator cannot be fine-tuned here: a 400 with a stable code.
    let other = tempfile::tempdir().unwrap();
    let app = app_with(other.path(), |config| {
        config.generator = GeneratorConfig::Openai(OpenAiGeneratorConfig {
            url: "http://127.0.0.1:9/v1".into(),
            ..OpenAiGeneratorConfig::default()
        });
    });
    expect_error(
        &app,
        post("/v1/twin/train", "application/json", ""),
        StatusCode::BAD_REQUEST,
        ErrorCode::TwinUnavailable,
    )
    .await;
    app.shutdown().unwrap();
}
