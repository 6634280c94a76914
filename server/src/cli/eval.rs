//! `twinflow eval retrieval DIR` and `twinflow eval rag DIR`: the evaluation
//! stage on a question set in the BEIR layout. The set's corpus is committed
//! into a fresh data directory with the configured embedder, chunking and
//! index, then every search setting is scored, or judged queries are
//! answered by the RAG pipeline and the answers scored
//! (`twinflow_pipelines::training::evaluation`). The figures are added to
//! the `evaluations` table of the configured data directory, where the
//! server's SQL, `/v1/evals` and the dashboard read them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use twinflow_pipelines::training::evaluation::setting;
use twinflow_pipelines::training::evaluation::{
    BeirSet, ContextReport, LlmJudge, RagReport, RetrievalReport, TwinReport, evaluate_context, evaluate_rag,
    evaluate_retrieval, evaluate_twin, fusion_grid,
};
use twinflow_schemas::api::SearchMode;
use twinflow_schemas::config::Config;
use twinflow_schemas::evaluation::{EvaluationRow, EvaluationRun};
use twinflow_schemas::{ContentFormat, Document, DocumentChange, DocumentKind};

use super::{EvalRagArgs, EvalRetrievalArgs, EvalTwinArgs};
use crate::app::App;
use crate::ui::say;

/// Documents handed to the engine at a time.
const BATCH: usize = 32;

/// Puts the configured data directory's active retrieval setting (if any)
/// in `config.search`, as its server searches; returns its version.
fn searching_as_active(config: &mut Config) -> anyhow::Result<Option<u64>> {
    let active = setting::apply_active(config)?;
    if let Some(version) = active {
        say(format_args!("the active retrieval setting is version {version}"));
    }
    Ok(active)
}

pub(super) fn retrieval(mut config: Config, args: &EvalRetrievalArgs) -> anyhow::Result<RetrievalReport> {
    let set = BeirSet::load(&args.set, &args.split)?;
    let record_to = config.storage.data_dir.clone();
    // The configured hybrid is the active retrieval setting of the configured data directory.
    let active = searching_as_active(&mut config)?;
    let registry_config = config.clone();
    let adapters = if args.adapters.is_empty() {
        Vec::new()
    } else {
        let dir = twinflow_pipelines::training::adapter::registry_dir(&config);
        let registry = twinflow_models::Registry::<twinflow_models::ModelCard>::open(&dir)?;
        let load = |v: &u64| registry.adapter(*v).map(|a| (*v, a)).with_context(|| format!("adapter version {v}"));
        args.adapters.iter().map(load).collect::<anyhow::Result<Vec<_>>>()?
    };
    let report = with_corpus(config, &set, args.keep.data_dir.as_deref(), |app| run(app, &set, args, &adapters))?;
    // The epoch means something only in a data directory that is kept (`--data-dir`).
    let epoch = if args.keep.data_dir.is_some() { report.epoch } else { 0 };
    let run = EvaluationRun::new("retrieval", twinflow_schemas::clock::now_ms(), &report.set, epoch, 0);
    let n = report.queries as u64;
    let rows: Vec<EvaluationRow> = report
        .settings
        .iter()
        .flat_map(|s| {
            [("ndcg@10", s.ndcg_at_10), ("recall@10", s.recall_at_10), ("mrr@10", s.mrr_at_10)].map(|(metric, e)| {
                // "vector @adapter-v2": the setting, with the adapter version it ran with.
                let (setting, model) = s.name.split_once(" @").unwrap_or((&s.name, "base"));
                EvaluationRow::estimate(&run, model, setting, metric, e, n)
            })
        })
        .collect();
    let mut rows = rows;
    if args.promote {
        match setting::judge_and_register(&registry_config, &report, active)? {
            Some(card) => {
                say(format_args!("retrieval setting version {}: {}", card.version, card.decision));
                let (model, held_out) = (format!("retrieval-v{}", card.version), card.test_queries as u64);
                let name =
                    format!("hybrid(bm25={}, leads={}, rrf_k={})", card.bm25_weight, card.lead_weight, card.rrf_k);
                rows.push(EvaluationRow::estimate(&run, &model, &name, "gain_ndcg@10", card.gain, held_out));
                rows.push(EvaluationRow::estimate(&run, &model, &name, "held_out_ndcg@10", card.ndcg_at_10, held_out));
            }
            None => {
                say(format_args!("the active setting is still the best fusion on the dev half: nothing to register"))
            }
        }
    }
    record(&record_to, &rows);
    Ok(report)
}

/// The RAG settings a figure was measured with, as the `setting` of its rows.
fn rag_setting(config: &Config, k: usize) -> String {
    let (rag, search) = (&config.rag, &config.search);
    format!(
        "k={k} rerank={} passage_tokens={} max_per_document={} expansions={} \
         hybrid(bm25={}, leads={}, rrf_k={})",
        serde_json::to_value(rag.rerank).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
        rag.passage_tokens,
        rag.max_per_document,
        rag.expansions,
        search.bm25_weight,
        search.lead_weight,
        search.rrf_k
    )
}

pub(super) fn context(mut config: Config, args: &EvalRagArgs) -> anyhow::Result<ContextReport> {
    let set = BeirSet::load(&args.set, &args.split)?;
    let record_to = config.storage.data_dir.clone();
    searching_as_active(&mut config)?;
    let k = args.k.unwrap_or(config.rag.k);
    let setting = rag_setting(&config, k);
    let (report, epoch) = with_corpus(config, &set, args.keep.data_dir.as_deref(), |app| {
        let report = evaluate_context(&app.rag(), &set, args.questions.unwrap_or(usize::MAX), k)?;
        Ok((report, app.store.committed_epoch()))
    })?;
    let epoch = if args.keep.data_dir.is_some() { epoch } else { 0 };
    let run = EvaluationRun::new("rag-context", twinflow_schemas::clock::now_ms(), &report.set, epoch, 0);
    let n = report.questions as u64;
    let rows = vec![
        EvaluationRow::estimate(&run, "base", &setting, "context_recall", report.context_recall, n),
        EvaluationRow::point(&run, "base", &setting, "prompt_tokens_median", report.prompt_tokens, n),
        EvaluationRow::point(&run, "base", &setting, "prepare_median_ms", report.prepare_ms, n),
    ];
    record(&record_to, &rows);
    Ok(report)
}

/// The context report for people.
pub(super) fn context_table(report: &ContextReport) -> String {
    format!(
        "{} — {} documents, {} questions, {} passages asked ({:.1} placed on average)\n\
         context recall (a relevant passage in the prompt)   {}\n\
         an extractive answer cites a relevant passage       {}\n\
         first relevant passage at place                     {}\n\
         prompt: median {:.0} tokens, prepared in a median {:.0} ms\n",
        report.set,
        report.documents,
        report.questions,
        report.k,
        report.passages,
        report.context_recall,
        report.extractive_cites_relevant,
        places(report),
        report.prompt_tokens,
        report.prepare_ms
    )
}

/// Where the prompts' first relevant passages stand: the share of questions
/// at places 1, 2 and 3, then further down, then nowhere.
fn places(report: &ContextReport) -> String {
    let total = report.first_relevant.len().max(1) as f64;
    let share = |keep: &dyn Fn(Option<usize>) -> bool| {
        100.0 * report.first_relevant.iter().filter(|(_, at, _)| keep(*at)).count() as f64 / total
    };
    format!(
        "1: {:.0}%, 2: {:.0}%, 3: {:.0}%, later: {:.0}%, none: {:.0}%",
        share(&|at| at == Some(1)),
        share(&|at| at == Some(2)),
        share(&|at| at == Some(3)),
        share(&|at| at.is_some_and(|a| a > 3)),
        share(&|at| at.is_none()),
    )
}

pub(super) fn rag(mut config: Config, args: &EvalRagArgs) -> anyhow::Result<RagReport> {
    let set = BeirSet::load(&args.set, &args.split)?;
    let record_to = config.storage.data_dir.clone();
    searching_as_active(&mut config)?;
    let k = args.k.unwrap_or(config.rag.k);
    let setting = rag_setting(&config, k);
    let questions = args.questions.unwrap_or(40);
    let earlier: Option<RagReport> = match &args.reuse {
        Some(path) => {
            let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let earlier: RagReport = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a report of `twinflow eval rag --out`", path.display()))?;
            anyhow::ensure!(
                earlier.set == set.name,
                "{} measured the set {:?}, not {:?}",
                path.display(),
                earlier.set,
                set.name
            );
            Some(earlier)
        }
        None => None,
    };
    let (report, epoch) = with_corpus(config, &set, args.keep.data_dir.as_deref(), |app| {
        say(format_args!("answering {} questions with {} passages each", questions.min(set.queries.len()), k));
        let rag = app.rag();
        let judge = match args.judge {
            true => Some(LlmJudge::new(rag.generator.get().map_err(|e| anyhow::anyhow!("the judge: {e}"))?)),
            false => None,
        };
        let report = evaluate_rag(&rag, &set, questions, k, judge.as_ref(), earlier.as_ref(), &mut |i, answer| {
            say(format_args!(
                "{:>3}. {} ({:.1} s{}, {}, context {}, cites relevant {}, {}/{} sentences grounded)",
                i + 1,
                answer.query_id,
                answer.timings.total_ms / 1e3,
                if answer.reused { ", generation reused" } else { "" },
                answer.mode,
                answer.context_has_relevant,
                answer.cites_relevant,
                answer.grounded_sentences,
                answer.sentences
            ))
        })?;
        Ok((report, app.store.committed_epoch()))
    })?;
    let epoch = if args.keep.data_dir.is_some() { epoch } else { 0 };
    let run = EvaluationRun::new("rag", twinflow_schemas::clock::now_ms(), &report.set, epoch, 0);
    let (n, model) = (report.questions as u64, report.generator.as_str());
    let mut rows: Vec<EvaluationRow> = [
        ("context_recall", report.context_recall),
        ("cites_relevant", report.cites_relevant),
        ("cites_relevant_without_evidence", report.cites_relevant_without_evidence),
        ("citation_precision", report.citation_precision),
        ("groundedness", report.groundedness),
        ("raw_groundedness", report.raw_groundedness),
        ("relevant_words", report.relevant_words),
    ]
    .into_iter()
    .map(|(metric, e)| EvaluationRow::estimate(&run, model, &setting, metric, e, n))
    .collect();
    if let (Some(judge), Some(judged)) = (&report.judge, report.judged_groundedness) {
        let setting = format!("{setting} judge={judge}");
        rows.push(EvaluationRow::estimate(&run, model, &setting, "judged_groundedness", judged, n));
    }
    rows.push(EvaluationRow::point(&run, model, &setting, "extractive", report.extractive, n));
    // Generation taken from an earlier report was not timed here.
    if report.reused == 0 {
        for (metric, value) in
            [("latency_median_ms", report.latency_ms.total), ("latency_p90_ms", report.latency_ms.total_p90)]
        {
            rows.push(EvaluationRow::point(&run, model, &setting, metric, value, n));
        }
    }
    record(&record_to, &rows);
    Ok(report)
}

pub(super) fn twin(config: Config, args: &EvalTwinArgs) -> anyhow::Result<TwinReport> {
    use twinflow_sinks::datasets::{read_instruct_version, read_preference_version, versions};
    let data_dir = config.storage.data_dir.clone();
    let version = match args.dataset {
        Some(v) => v,
        None => *versions(&data_dir, "instruct").last().with_context(|| {
            format!("{} has no dataset version yet: `twinflow datasets snapshot` writes one", data_dir.display())
        })?,
    };
    let samples = read_instruct_version(&data_dir, version)?;
    let preference = read_preference_version(&data_dir, version)?;
    let (gguf, _) = twinflow_pipelines::inference::LazyGenerator::new(config.generator.clone()).local_gguf()?;
    let registry = twinflow_models::Registry::<twinflow_models::TwinCard>::open(
        &twinflow_pipelines::training::twin::registry_dir(&config),
    )?;
    let wanted: Vec<u64> =
        if args.versions.is_empty() { registry.active()?.into_iter().collect() } else { args.versions.clone() };
    let mut models = vec![("base".to_owned(), None)];
    for v in wanted {
        models.push((format!("twin-v{v}"), Some(registry.lora(v).with_context(|| format!("twin version {v}"))?)));
    }
    say(format_args!("scoring {} on dataset version {version} with {}", models.len(), gguf.display()));
    let trainer = twinflow_models::LoraTrainer::load(&gguf, config.twin.max_tokens, &twinflow_models::cpu_device())?;
    let report = evaluate_twin(&trainer, version, &samples, &preference, &models, args.max)?;
    let run =
        EvaluationRun::new("twin", twinflow_schemas::clock::now_ms(), &format!("instruct-v{version}"), 0, version);
    let (answers, pairs) = (report.answers as u64, report.preference_pairs as u64);
    let mut rows = Vec::new();
    for m in &report.models {
        rows.push(EvaluationRow::point(&run, &m.model, "per answer token", "nll", m.nll.mean, answers));
        if m.perplexity.is_finite() {
            rows.push(EvaluationRow::point(&run, &m.model, "per answer token", "perplexity", m.perplexity, answers));
        }
        if pairs > 0 {
            rows.push(EvaluationRow::estimate(&run, &m.model, "", "preference_accuracy", m.preference_accuracy, pairs));
        }
    }
    record(&data_dir, &rows);
    Ok(report)
}

/// The twin report for people.
pub(super) fn twin_table(report: &TwinReport) -> String {
    let mut out = format!(
        "dataset version {}: {} held-out answers (questions by {}), {} preference triples
{:<16} {:>10} {:>12} {:>28}
",
        report.dataset_version,
        report.answers,
        report.evidence.join(", "),
        report.preference_pairs,
        "model",
        "nll",
        "perplexity",
        "preference accuracy [95% CI]"
    );
    for m in &report.models {
        out += &format!(
            "{:<16} {:>10.4} {:>12.2} {:>28}
",
            m.model,
            m.nll.mean,
            m.perplexity,
            if report.preference_pairs > 0 { m.preference_accuracy.to_string() } else { "–".to_owned() }
        );
    }
    out
}

/// Adds one evaluation's figures to the `evaluations` table of `data_dir`. A
/// failure is said, not fatal: the report (printed, and `--out`) is whole.
fn record(data_dir: &std::path::Path, rows: &[EvaluationRow]) {
    match twinflow_sinks::evaluations::append_evaluations(data_dir, rows) {
        Ok(path) => say(format_args!("{} figures added to the evaluations table ({})", rows.len(), path.display())),
        Err(e) => say(format_args!(
            "warning: the figures were not added to the evaluations table in {}: {e}",
            data_dir.display()
        )),
    }
}

/// Runs `then` on an app whose store holds `set`'s corpus, in `data_dir` (or
/// a temporary directory), with no sources, no retraining and no keys.
fn with_corpus<T>(
    mut config: Config,
    set: &BeirSet,
    data_dir: Option<&std::path::Path>,
    then: impl FnOnce(&Arc<App>) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let scratch = tempfile::tempdir().context("cannot make a temporary data directory")?;
    config.storage.data_dir = data_dir.map_or_else(|| scratch.path().to_owned(), ToOwned::to_owned);
    // Only the corpus: no sources, no retraining, no keys to generate (nothing listens).
    config.sources.clear();
    config.training.on_drift = false;
    config.twin.on_drift = false;
    config.auth.mode = twinflow_schemas::config::AuthMode::None;
    let app = App::start(config)?;
    let outcome = commit_corpus(&app, set).and_then(|()| then(&app));
    app.shutdown()?;
    outcome
}

fn commit_corpus(app: &Arc<App>, set: &BeirSet) -> anyhow::Result<()> {
    say(format_args!(
        "{}: {} documents, {} judged queries; embedding with {}",
        set.name,
        set.corpus.len(),
        set.queries.len(),
        app.engine()?.embedder().model_id()
    ));
    let started = Instant::now();
    let mut last = 0;
    for batch in set.corpus.chunks(BATCH) {
        while app.engine()?.stats().pending_changes > 4 * BATCH {
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
        last = app.engine()?.submit(changes).map_err(|e| anyhow::anyhow!("the engine refused the corpus: {e}"))?;
    }
    app.engine()?.flush();
    anyhow::ensure!(
        app.engine()?.wait_committed(last, Duration::from_secs(3600)),
        "the corpus was not committed in an hour"
    );
    say(format_args!("corpus committed in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}

fn run(
    app: &Arc<App>,
    set: &BeirSet,
    args: &EvalRetrievalArgs,
    adapters: &[(u64, twinflow_models::Adapter)],
) -> anyhow::Result<RetrievalReport> {
    let search = &app.config.search;
    let mut settings = vec![
        ("vector".to_owned(), SearchMode::Vector),
        ("bm25".to_owned(), SearchMode::Bm25),
        (setting::CONFIGURED.to_owned(), search.fusion().mode()),
    ];
    if args.tune {
        settings.extend(fusion_grid());
    }
    let embedder = app.engine()?.embedder();
    let mut report = evaluate_retrieval(&app.store, embedder.as_ref(), set, &settings, !args.no_whole_documents)?;
    // Each adapter version: the vectors re-projected (nothing re-encoded), the same queries.
    for (version, adapter) in adapters {
        let projection = twinflow_pipelines::training::adapter::projection(*version, adapter.clone());
        app.store.set_projection(Some(projection))?;
        let more = evaluate_retrieval(&app.store, embedder.as_ref(), set, &settings[..3], false)?;
        report.settings.extend(more.settings.into_iter().filter(|s| s.name != "bm25").map(|mut s| {
            s.name = format!("{} @adapter-v{version}", s.name);
            s
        }));
    }
    Ok(report)
}

/// Writes `report` as JSON to `out`, when the caller asked for it (`--out`).
pub(super) fn write_report(out: Option<&std::path::Path>, report: &impl serde::Serialize) -> anyhow::Result<()> {
    let Some(out) = out else { return Ok(()) };
    std::fs::write(out, serde_json::to_vec_pretty(report)?)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))
}

/// The RAG report for people: the measures, then the latency.
pub(super) fn rag_table(report: &RagReport) -> String {
    let latency = &report.latency_ms;
    format!(
        "{} — {} documents, {} questions, generator {}, support from cosine {:.2} and {:.0}% of the words\n\
         context recall (a relevant passage in the prompt)   {}\n\
         cites a relevant passage                            {}\n\
         … not counting the evidence quoted after answers    {} ({:.0}% of answers quote evidence)\n\
         citation precision (answers that cite)              {}\n\
         groundedness (sentences a cited passage supports)   {}\n\
         … the generator's answers before grounding          {}\n\
         the answer's content words a relevant document has  {}\n\
         answers replaced by quoted passages                 {:.0}%\n\
         {}{}\
         latency: median {:.2} s (p90 {:.2} s): expansion {:.0} ms, retrieval {:.0} ms, prefill {:.0} ms, \
         generation {:.0} ms, grounding {:.0} ms\n",
        report.set,
        report.documents,
        report.questions,
        report.generator,
        report.min_support,
        report.min_overlap * 100.0,
        report.context_recall,
        report.cites_relevant,
        report.cites_relevant_without_evidence,
        report.with_evidence * 100.0,
        report.citation_precision,
        report.groundedness,
        report.raw_groundedness,
        report.relevant_words,
        report.extractive * 100.0,
        match (&report.judge, &report.judged_groundedness) {
            (Some(judge), Some(judged)) => format!(
                "groundedness by the LLM judge ({judge})            {judged} ({:.0}% unclear)\n",
                report.judged_unclear.unwrap_or(0.0) * 100.0
            ),
            _ => String::new(),
        },
        match report.reused {
            0 => String::new(),
            reused => format!(
                "generation reused from the earlier report            {reused} of {} answers (their timings are the earlier ones)\n",
                report.questions
            ),
        },
        latency.total / 1e3,
        latency.total_p90 / 1e3,
        latency.expansion,
        latency.retrieval,
        latency.prefill,
        latency.generation,
        latency.grounding,
    )
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
