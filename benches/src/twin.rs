//! `twinflow-bench twin`: one fine-tuning run of the twin at a realistic
//! size. State of the Union speeches of a span of years (one "author" voice)
//! are ingested; SmolLM2 writes questions (and its own answer) for
//! `--held-out-questions` extracts of test documents, then `--questions`
//! spread over every document, so both splits get LLM-written questions
//! and preference pairs; the twin job runs the stages
//! of `--method` (SFT on up to `--examples` samples, then DPO on the pairs),
//! each judged on held-out data; then the base model and the merged twin
//! decode the same prompt side by side (the merge must cost nothing per token).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use twinflow_connectors::demo::{default_cache_dir, fetch_sotu, sotu_changes};
use twinflow_models::{ChatMessage, GenerateParams, Generator, LocalLlm, cpu_device, fetch_smollm2};
use twinflow_schemas::Split;
use twinflow_schemas::config::Config;
use twinflow_server::App;

/// How the run is configured.
#[derive(Debug, Clone)]
pub struct TwinBench {
    /// Speeches from this year…
    pub from: u32,
    /// …to this one (inclusive).
    pub to: u32,
    /// Training examples at most.
    pub examples: usize,
    /// Held-out examples scored.
    pub test: usize,
    pub max_tokens: usize,
    pub epochs: usize,
    /// `sft`, `dpo` or `sft+dpo`.
    pub method: String,
    /// Extracts of held-out documents the base model writes questions for before the run…
    pub held_out_questions: usize,
    /// …then extracts of any document.
    pub questions: usize,
    /// Held-out answers (and pairs) a stage needs to be judged.
    pub min_questions: usize,
}

/// Runs the bench and returns the report.
pub fn run(bench: &TwinBench) -> anyhow::Result<Value> {
    let corpus = fetch_sotu(&default_cache_dir()).context("fetching the SOTU corpus")?;
    let year = |id: &str| id.get(5..9).and_then(|y| y.parse::<u32>().ok()).unwrap_or(0);
    let speeches: Vec<_> = sotu_changes(&corpus, None)?
        .into_iter()
        .filter(|c| (bench.from..=bench.to).contains(&year(c.doc_id())))
        .collect();
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.engine.tick = Duration::from_millis(20);
    config.drift.enabled = false;
    config.training.on_drift = false;
    config.twin.max_examples = bench.examples;
    config.twin.max_test = bench.test;
    config.twin.max_tokens = bench.max_tokens;
    config.twin.epochs = bench.epochs;
    config.twin.method = serde_json::from_value(json!(bench.method)).context("--method: sft, dpo or sft+dpo")?;
    config.training.questions_per_run = 0;
    config.training.min_questions = bench.min_questions;
    let twin_config = serde_json::to_value(&config.twin)?;
    let app = App::start(config)?;
    let speeches_in = speeches.len();
    let epoch = app.engine().unwrap().submit(speeches).map_err(|e| anyhow::anyhow!("{e}"))?;
    while app.store.committed_epoch() < epoch {
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let generator = app.generator.get().map_err(|e| anyhow::anyhow!("{e}"))?;
    // Held-out documents first (the evidence every stage is judged on), then spread over all of them.
    let held_out = app.training.datasets.generate_for(
        &app.store,
        generator.as_ref(),
        bench.held_out_questions,
        Some(Split::Test),
    )?;
    let questions = app.training.datasets.generate_for(&app.store, generator.as_ref(), bench.questions, None)?;
    let questions_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let outcome = app.twin.run(json!("bench"))?;
    let run_s = started.elapsed().as_secs_f64();
    let card = app.twin.registry.card(outcome.version)?;
    let stages: Vec<Value> = app
        .twin
        .registry
        .list()?
        .into_iter()
        .map(|card| {
            json!({
                "version": card.version,
                "kind": card.kind,
                "parent": card.parent,
                "train_s": card.report.seconds,
                "steps": card.report.steps,
                "examples": card.report.examples,
                "epoch_losses": card.report.epoch_losses,
                "epoch_rewards": card.report.epoch_rewards,
                "held_out_steps": card.report.held_out_steps,
                "held_out_losses": card.report.held_out_losses,
                "held_out_rewards": card.report.held_out_rewards,
                "evaluation": card.evaluation,
                "promotable": card.promotable,
                "decision": card.decision,
            })
        })
        .collect();

    // Decode speed: base and merged twin, same prompt, greedy, side by side.
    let path = fetch_smollm2(&default_cache_dir())?;
    let base = LocalLlm::load(&path, 2048, &cpu_device())?;
    let twin = app.generator.build_twin("twin", &app.twin.registry.lora(outcome.version)?)?;
    let messages = [ChatMessage::new("user", "What should the Congress do about the tariff?")];
    let params = GenerateParams { max_tokens: 64, temperature: 0.0, ..GenerateParams::default() };
    let mut decode = Vec::new();
    for _ in 0..2 {
        for (name, model) in [("base", &base as &dyn Generator), ("twin", twin.as_ref())] {
            let g = model.generate(&messages, &params, &mut |_| std::ops::ControlFlow::Continue(()))?;
            decode.push(json!({
                "model": name,
                "completion_tokens": g.completion_tokens,
                "decode_tok_s": g.completion_tokens.saturating_sub(1) as f64 / (g.decode_ms / 1e3),
                "text": g.text,
            }));
        }
    }
    let rate = |name: &str| {
        let rates: Vec<f64> =
            decode.iter().filter(|d| d["model"] == name).filter_map(|d| d["decode_tok_s"].as_f64()).collect();
        rates.iter().sum::<f64>() / rates.len().max(1) as f64
    };
    let tokens = card.report.answer_tokens * card.report.epoch_losses.len();
    app.shutdown()?;
    Ok(json!({
        "bench": "twin",
        "speeches": speeches_in,
        "years": format!("{}–{}", bench.from, bench.to),
        "config": twin_config,
        "held_out_questions": held_out,
        "questions": questions,
        "questions_s": questions_s,
        "run_s": run_s,
        "stages": stages,
        "active": app.twin.active_name(),
        "train_s": card.report.seconds,
        "steps": card.report.steps,
        "examples": card.report.examples,
        "answer_tokens_per_s": tokens as f64 / card.report.seconds,
        "epoch_losses": card.report.epoch_losses,
        "trainable_parameters": card.report.trainable_parameters,
        "evaluation": card.evaluation,
        "perplexity": {
            "base": card.evaluation.base.perplexity(),
            "candidate": card.evaluation.candidate.perplexity(),
        },
        "decision": card.decision,
        "decode": decode,
        "decode_ratio_twin_over_base": rate("twin") / rate("base"),
    }))
}
