//! `twinflow eval retrieval DIR`: the evaluation stage on a question set
//! in the BEIR layout. The set's corpus is committed into a fresh data
//! directory with the configured embedder, chunking and index, then every
//! setting is scored (`twinflow_pipelines::training::evaluation`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use twinflow_pipelines::training::evaluation::{BeirSet, RetrievalReport, evaluate_retrieval, fusion_grid};
use twinflow_schemas::api::SearchMode;
use twinflow_schemas::config::Config;
use twinflow_schemas::{ContentFormat, Document, DocumentChange, DocumentKind};

use super::EvalRetrievalArgs;
use crate::app::App;
use crate::ui::say;

/// Documents handed to the engine at a time.
const BATCH: usize = 32;

pub(super) fn retrieval(mut config: Config, args: &EvalRetrievalArgs) -> anyhow::Result<RetrievalReport> {
    let set = BeirSet::load(&args.set, &args.split)?;
    let scratch = tempfile::tempdir().context("cannot make a temporary data directory")?;
    config.storage.data_dir = args.data_dir.clone().unwrap_or_else(|| scratch.path().to_owned());
    // Only the corpus: no sources, no retraining, no keys to generate (nothing listens).
    config.sources.clear();
    config.training.on_drift = false;
    config.twin.on_drift = false;
    config.auth.mode = twinflow_schemas::config::AuthMode::None;
    let app = App::start(config)?;
    let outcome = run(&app, &set, args);
    app.shutdown()?;
    outcome
}

fn run(app: &Arc<App>, set: &BeirSet, args: &EvalRetrievalArgs) -> anyhow::Result<RetrievalReport> {
    say(format_args!(
        "{}: {} documents, {} judged queries; embedding with {}",
        set.name,
        set.corpus.len(),
        set.queries.len(),
        app.engine.embedder().model_id()
    ));
    let started = Instant::now();
    let mut last = 0;
    for batch in set.corpus.chunks(BATCH) {
        while app.engine.stats().pending_changes > 4 * BATCH {
            std::thread::sleep(Duration::from_millis(50));
        }
        let changes = batch
            .iter()
            .map(|doc| {
                DocumentChange::Upsert(Document {
                    doc_id: doc.id.clone(),
                    kind: DocumentKind::Article,
                    author: String::new(),
                    title: doc.title.clone(),
                    url: String::new(),
                    source: "eval".into(),
                    format: Some(ContentFormat::Text),
                    fetched_at: None,
                    content: doc.text.clone(),
                })
            })
            .collect();
        last = app.engine.submit(changes).map_err(|e| anyhow::anyhow!("the engine refused the corpus: {e}"))?;
    }
    app.engine.flush();
    anyhow::ensure!(
        app.engine.wait_committed(last, Duration::from_secs(3600)),
        "the corpus was not committed in an hour"
    );
    say(format_args!("corpus committed in {:.1} s; searching", started.elapsed().as_secs_f64()));
    let search = &app.config.search;
    let mut settings = vec![
        ("vector".to_owned(), SearchMode::Vector),
        ("bm25".to_owned(), SearchMode::Bm25),
        (
            "hybrid (configured)".to_owned(),
            SearchMode::Hybrid {
                vector_weight: search.vector_weight,
                bm25_weight: search.bm25_weight,
                rrf_k: search.rrf_k,
            },
        ),
    ];
    if args.tune {
        settings.extend(fusion_grid());
    }
    let report =
        evaluate_retrieval(&app.store, app.engine.embedder().as_ref(), set, &settings, !args.no_whole_documents)?;
    Ok(report)
}

/// The report as a table for people: every setting on all queries, then the tuning.
pub(super) fn table(report: &RetrievalReport) -> String {
    let mut out = format!(
        "{} — {} documents, {} queries, epoch {}, {}\n{:<32} {:>22} {:>22} {:>22}\n",
        report.set,
        report.documents,
        report.queries,
        report.epoch,
        report.embedder,
        "setting",
        "nDCG@10 [95% CI]",
        "recall@10",
        "MRR@10"
    );
    for s in &report.settings {
        out += &format!(
            "{:<32} {:>22} {:>22} {:>22}\n",
            s.name,
            s.ndcg_at_10.to_string(),
            s.recall_at_10.to_string(),
            s.mrr_at_10.to_string()
        );
    }
    if let Some(tuned) = &report.tuned {
        out += &format!(
            "\nchosen on {} dev queries: {} (dev nDCG@10 {:.3}); on the other {} queries:\n",
            tuned.dev_queries, tuned.best.name, tuned.best.ndcg_at_10.mean, tuned.test_queries
        );
        for s in tuned.test.iter().filter(|s| s.name == tuned.best.name || !s.name.starts_with("hybrid(")) {
            out += &format!("  {:<30} nDCG@10 {}\n", s.name, s.ndcg_at_10);
        }
        for (name, gain) in &tuned.gains {
            out += &format!("  gain over {name:<20} {gain}\n");
        }
    }
    out
}
