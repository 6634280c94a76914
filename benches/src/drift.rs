//! `twinflow-bench drift`: the training loop at full scale. Every State of
//! the Union speech (1790–2021) is streamed in chronological order, one
//! epoch per decade, through the real MiniLM encoder; after each epoch the
//! drift against the reference is recorded, and when drift triggers a
//! retrain the runner waits for it (so runs do not overlap and the report is
//! reproducible) and records its dataset, evaluation and decision.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use twinflow_connectors::demo::{default_cache_dir, fetch_sotu, sotu_changes};
use twinflow_schemas::DocumentChange;
use twinflow_schemas::config::{Config, EmbedderConfig, MiniLmEmbedderConfig};
use twinflow_server::App;

/// How the run is configured.
#[derive(Debug, Clone)]
pub struct DriftBench {
    /// Years per epoch.
    pub years: u32,
    /// Use the feature-hashing embedder instead of MiniLM (a quick dry run).
    pub hashing: bool,
}

fn year(change: &DocumentChange) -> u32 {
    change.doc_id().get(5..9).and_then(|y| y.parse().ok()).unwrap_or(0)
}

/// Runs the stream and returns the report.
pub fn run(bench: &DriftBench) -> anyhow::Result<Value> {
    let corpus = fetch_sotu(&default_cache_dir()).context("fetching the SOTU corpus")?;
    let speeches = sotu_changes(&corpus, None)?;
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.engine.tick = Duration::from_millis(20);
    config.drift.cooldown = Duration::ZERO;
    if !bench.hashing {
        config.embedder = EmbedderConfig::Minilm(MiniLmEmbedderConfig::default());
    }
    let drift_config = serde_json::to_value(&config.drift)?;
    let training_config = serde_json::to_value(&config.training)?;
    let app = App::start(config)?;
    let started = Instant::now();
    let mut epochs = Vec::new();
    let mut runs = Vec::new();
    let years = bench.years.max(1);
    let mut start = 1790;
    while start <= 2021 {
        let batch: Vec<DocumentChange> =
            speeches.iter().filter(|c| (start..start + years).contains(&year(c))).cloned().collect();
        let span = format!("{start}–{}", (start + years - 1).min(2021));
        start += years;
        if batch.is_empty() {
            continue;
        }
        let speeches_in = batch.len();
        let epoch = app.engine().unwrap().submit(batch).map_err(|e| anyhow::anyhow!("{e}"))?;
        app.engine().unwrap().flush();
        anyhow::ensure!(
            app.engine().unwrap().wait_committed(epoch, Duration::from_secs(3600)),
            "epoch {epoch} committed"
        );
        let rows: Vec<_> = app.store.drift_rows(epoch - 1).into_iter().filter(|r| r.epoch == epoch).collect();
        let metric = |name: &str| rows.iter().find(|r| r.metric == name).map(|r| r.value);
        let triggered = rows.iter().any(|r| r.triggered);
        let state = app.training.monitor.as_ref().map(|m| m.lock().state());
        let line = json!({
            "years": span,
            "epoch": epoch,
            "speeches": speeches_in,
            "reference": state.as_ref().and_then(|s| s.reference.clone()),
            "window": rows.first().map(|r| r.window_size),
            "mean_shift": metric("mean_shift"),
            "mmd": metric("mmd"),
            "oov_rate": metric("oov_rate"),
            "triggered": triggered,
        });
        eprintln!("{line}");
        epochs.push(line);
        // A triggered run: wait for it before streaming on.
        let before = runs.len() as u64;
        let deadline = Instant::now() + Duration::from_secs(3600);
        while app.training.is_running() || (triggered && app.training.status().runs == before) {
            anyhow::ensure!(Instant::now() < deadline, "training did not finish");
            std::thread::sleep(Duration::from_millis(200));
        }
        let status = app.training.status();
        if status.runs > before {
            let run = match (&status.last, &status.last_error) {
                (_, Some(error)) => json!({ "after": span, "error": error }),
                (Some(outcome), None) => json!({ "after": span, "outcome": outcome }),
                _ => json!({ "after": span }),
            };
            eprintln!("{run}");
            runs.push(run);
        }
    }
    let models = app.training.registry.list()?;
    let report = json!({
        "embedder": app.engine().unwrap().embedder().model_id(),
        "years_per_epoch": years,
        "drift_config": drift_config,
        "training_config": training_config,
        "chunks": app.store.counts().1.get("chunks"),
        "epochs": epochs,
        "training_runs": runs,
        "active": app.training.active_name(),
        "versions": models.len(),
        "seconds": started.elapsed().as_secs_f64(),
    });
    app.shutdown()?;
    Ok(report)
}
