//! The evaluation stage end to end: `twinflow eval retrieval` on a small
//! BEIR-format set (the feature-hashing embedder, a test double for the
//! model), and the same measures on wrong judgements, which must score
//! near zero (the measures see the judgements, not just the rankings).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use twinflow_pipelines::training::evaluation::{BeirSet, evaluate_retrieval};
use twinflow_schemas::api::SearchMode;
use twinflow_schemas::evaluation::EvaluationRow;
use twinflow_schemas::{ChangeLimits, parse_change};

use crate::fixtures::{app, article, upsert_line};

const TOPICS: [&str; 12] = [
    "lighthouses",
    "orchards",
    "glaciers",
    "railroads",
    "volcanoes",
    "harbours",
    "beekeeping",
    "telescopes",
    "vineyards",
    "bridges",
    "caravans",
    "windmills",
];

/// A set whose query `q-i` asks about topic `i`, judged relevant to `doc-(i + shift)`.
fn write_set(dir: &Path, shift: usize) {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    // The topics' documents, then 28 distractors nobody asks about.
    let topics = TOPICS.iter().map(|t| (*t).to_owned()).chain((0..28).map(|n| format!("subject{n}")));
    let corpus: String = topics
        .enumerate()
        .map(|(i, topic)| {
            serde_json::json!({"_id": format!("doc-{i}"), "title": topic, "text": article(&topic, 3)}).to_string()
                + "\n"
        })
        .collect();
    std::fs::write(dir.join("corpus.jsonl"), corpus).unwrap();
    let queries: String = TOPICS
        .iter()
        .enumerate()
        .map(|(i, topic)| serde_json::json!({"_id": format!("q-{i}"), "text": format!("{topic}?")}).to_string() + "\n")
        .collect();
    std::fs::write(dir.join("queries.jsonl"), queries).unwrap();
    let qrels: String = (0..TOPICS.len()).map(|i| format!("q-{i}\tdoc-{}\t1\n", (i + shift) % TOPICS.len())).collect();
    std::fs::write(dir.join("qrels/test.tsv"), format!("query-id\tcorpus-id\tscore\n{qrels}")).unwrap();
}

/// `twinflow eval <args> --out FILE SET` on the topics set with the
/// feature-hashing embedder and `more_toml`: its output (both streams), report,
/// and the rows it added to the configured data directory's `evaluations`.
fn run_eval(more_toml: &str, args: &[&str]) -> (String, serde_json::Value, Vec<EvaluationRow>) {
    run_eval_on(more_toml, args, |_| {})
}

/// [`run_eval`], after `setup` prepared the configured data directory.
fn run_eval_on(
    more_toml: &str,
    args: &[&str],
    setup: impl FnOnce(&Path),
) -> (String, serde_json::Value, Vec<EvaluationRow>) {
    let dir = tempfile::tempdir().unwrap();
    write_set(&dir.path().join("topics"), 0);
    let data = dir.path().join("data");
    setup(&data);
    let (succeeded, stdout) = eval_in(dir.path(), "data", more_toml, args);
    assert!(succeeded, "{stdout}");
    let evaluations = twinflow_sinks::evaluations::read_evaluations(&data).expect("the evaluations table");
    (stdout, serde_json::from_slice(&std::fs::read(dir.path().join("data.json")).unwrap()).unwrap(), evaluations)
}

/// `twinflow eval <args> --out DIR/NAME.json DIR/topics` with the
/// feature-hashing embedder, `more_toml` and the data directory `DIR/NAME`:
/// whether it succeeded, and what it printed and said, together.
fn eval_in(dir: &Path, name: &str, more_toml: &str, args: &[&str]) -> (bool, String) {
    let config = dir.join(format!("{name}.toml"));
    let toml = format!(
        "[embedder]\ntype = \"hashing\"\n\n[engine]\nworkers = 2\ntick = \"10ms\"\n\n[storage]\ndata_dir = {:?}\n{more_toml}",
        dir.join(name).display().to_string()
    );
    std::fs::write(&config, toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_twinflow"))
        .arg("--config")
        .arg(&config)
        .arg("eval")
        .args(args)
        .arg("--out")
        .arg(dir.join(format!("{name}.json")))
        .arg(dir.join("topics"))
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), printed)
}

#[test]
fn eval_retrieval_scores_every_setting_and_tunes_on_half_the_queries() {
    let (stdout, report, evaluations) = run_eval("", &["retrieval", "--tune", "--promote"]);
    // Every fusion finds each topic first: no gain over the configured one, so nothing becomes active.
    assert!(stdout.contains("kept the active setting") || stdout.contains("still the best fusion"), "{stdout}");
    let evaluations: Vec<EvaluationRow> =
        evaluations.into_iter().filter(|r| !r.model.starts_with("retrieval-v")).collect();
    // Every setting's three measures, with the report's intervals, in the evaluations table.
    let settings = report["settings"].as_array().unwrap();
    assert_eq!(evaluations.len(), 3 * settings.len());
    let vector = evaluations.iter().find(|r| r.setting == "vector" && r.metric == "ndcg@10").expect("vector nDCG@10");
    assert_eq!(
        (vector.kind.as_str(), vector.model.as_str(), vector.question_set.as_str()),
        ("retrieval", "base", "topics")
    );
    // The corpus was committed into a scratch directory, gone after: no epoch to point at.
    assert_eq!((vector.queries, vector.index_epoch), (12, 0));
    assert!(report["epoch"].as_u64().unwrap() > 0);
    let reported = settings.iter().find(|s| s["name"] == "vector").unwrap();
    assert_eq!(vector.value, reported["ndcg_at_10"]["mean"].as_f64().unwrap());
    assert_eq!(vector.low, reported["ndcg_at_10"]["low"].as_f64().unwrap());
    assert!(stdout.contains("nDCG@10") && stdout.contains("chosen on"), "{stdout}");
    assert_eq!((report["documents"].as_u64(), report["queries"].as_u64()), (Some(40), Some(12)));
    let settings = report["settings"].as_array().unwrap();
    let names: Vec<&str> = settings.iter().map(|s| s["name"].as_str().unwrap()).collect();
    for wanted in ["vector", "bm25", "hybrid (configured)", "whole-documents", "hybrid(bm25 0.5, leads 1, k 10)"] {
        assert!(names.contains(&wanted), "{names:?}");
    }
    assert!(names.len() > 20, "the fusion grid: {names:?}");
    let mode = |name: &str| &settings.iter().find(|s| s["name"] == name).unwrap()["mode"];
    assert_eq!(
        mode("hybrid(bm25 0.5, leads 1, k 10)")["lead_weight"],
        1.0,
        "the grid's modes carry their leads' weight"
    );
    for setting in settings {
        let ndcg = setting["ndcg_at_10"]["mean"].as_f64().unwrap();
        // One topic word per query, one document per topic: every setting finds it first.
        assert!(ndcg > 0.9, "{}: {ndcg}", setting["name"]);
        let (low, high) =
            (setting["ndcg_at_10"]["low"].as_f64().unwrap(), setting["ndcg_at_10"]["high"].as_f64().unwrap());
        assert!(low <= ndcg && ndcg <= high);
    }
    let tuned = &report["tuned"];
    assert_eq!(tuned["dev_queries"].as_u64().unwrap() + tuned["test_queries"].as_u64().unwrap(), 12);
    assert!(tuned["best"]["name"].as_str().unwrap().starts_with("hybrid("), "{tuned}");
}

/// `--adapter 1`: vector search and the configured hybrid again with the
/// registry's adapter version 1, here one that keeps 8 of 384 dimensions:
/// its rows are that version's, and it scores below the base vectors.
#[test]
fn eval_retrieval_scores_each_adapter_version_asked_for() {
    use twinflow_models::{ModelCard, Registry};
    let register = |data: &Path| {
        let card =
            crate::fixtures::adapter_card(384, crate::fixtures::first_dataset(), "a test of per-version evaluation");
        let registry = Registry::<ModelCard>::open(&data.join("_models")).unwrap();
        registry.register_adapter(card, &crate::fixtures::keep_eight(384), &[]).unwrap();
    };
    let (_, report, evaluations) = run_eval_on("", &["retrieval", "--no-whole-documents", "--adapter", "1"], register);
    let names: Vec<&str> = report["settings"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["vector", "bm25", "hybrid (configured)", "vector @adapter-v1", "hybrid (configured) @adapter-v1"]
    );
    let ndcg = |model: &str, setting: &str| {
        evaluations
            .iter()
            .find(|r| r.model == model && r.setting == setting && r.metric == "ndcg@10")
            .map(|r| r.value)
            .unwrap_or_else(|| panic!("{model} {setting}: {evaluations:?}"))
    };
    assert!(ndcg("base", "vector") > 0.9);
    assert!(ndcg("adapter-v1", "vector") < ndcg("base", "vector") - 0.2, "{evaluations:?}");
    assert!(ndcg("adapter-v1", "hybrid (configured)") > ndcg("adapter-v1", "vector"), "BM25 is not projected");
}

#[test]
fn wrong_judgements_score_near_zero() {
    let dir = tempfile::tempdir().unwrap();
    let set_dir = dir.path().join("shifted");
    write_set(&set_dir, 5);
    let set = BeirSet::load(&set_dir, "test").unwrap();
    let app = app(&dir.path().join("data"));
    let lines: Vec<String> = set.corpus.iter().map(|d| upsert_line(&d.id, &d.title, &d.text)).collect();
    let changes = lines.iter().map(|l| parse_change(l.as_bytes(), 1, &ChangeLimits::default()).unwrap()).collect();
    let epoch = app.engine().unwrap().submit(changes).unwrap();
    app.engine().unwrap().flush();
    assert!(app.engine().unwrap().wait_committed(epoch, Duration::from_secs(60)));
    let settings = [("vector".to_owned(), SearchMode::Vector), ("bm25".to_owned(), SearchMode::Bm25)];
    let report =
        evaluate_retrieval(&app.store, app.engine().unwrap().embedder().as_ref(), &set, &settings, true).unwrap();
    assert_eq!(report.settings.len(), 4, "two modes, whole documents with and without titles");
    for setting in &report.settings {
        // The judged document is another topic's: among 39 others, found at best far down, if at all.
        assert!(setting.ndcg_at_10.mean < 0.3, "{}: {}", setting.name, setting.ndcg_at_10);
        assert!(setting.mrr_at_10.mean < 0.3, "{}: {}", setting.name, setting.mrr_at_10);
    }
    assert!(report.tuned.is_none(), "no hybrid settings: nothing to tune");
    app.shutdown().unwrap();
}

/// `twinflow eval rag`: judged queries answered by the RAG pipeline with the
/// real local generator (SmolLM2) over the feature-hashing embedder. Every
/// sentence of a grounded answer is supported by a passage it cites, so the
/// judge (the same rule) finds all of them grounded; the generator's own
/// answers can only be as grounded or less.
#[test]
fn eval_rag_answers_judged_queries_and_scores_citations_and_groundedness() {
    let (stdout, report, evaluations) =
        run_eval("\n[rag]\nexpansions = 0\nmax_tokens = 48\n", &["rag", "--questions", "3", "--k", "2", "--judge"]);
    assert!(stdout.contains("context recall") && stdout.contains("groundedness"), "{stdout}");
    assert_eq!(report["questions"], 3);
    let answers = report["answers"].as_array().unwrap();
    // Spread over the 12 judged queries: q-0, q-4, q-8.
    let ids: Vec<&str> = answers.iter().map(|a| a["query_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["q-0", "q-4", "q-8"]);
    for answer in answers {
        assert!(["generated", "extractive"].contains(&answer["mode"].as_str().unwrap()), "{answer}");
        assert!(answer["sentences"].as_u64().unwrap() > 0, "{answer}");
        assert_eq!(answer["grounded_sentences"], answer["sentences"], "{answer}");
        assert!(answer["timings"]["grounding_ms"].as_f64().unwrap() > 0.0);
    }
    let mean = |measure: &str| report[measure]["mean"].as_f64().unwrap();
    assert_eq!(mean("groundedness"), 1.0);
    let recorded =
        |metric: &str| evaluations.iter().find(|r| r.metric == metric).map(|r| (r.value, r.setting.as_str()));
    let (recall, setting) = recorded("context_recall").expect("context recall recorded");
    assert_eq!(recall, mean("context_recall"));
    assert!(setting.starts_with("k=2 rerank=chunk passage_tokens="), "{setting}");
    // The LLM judge (the configured generator) gave its verdict on every answer sentence.
    assert_eq!(report["judge"], report["generator"]);
    let judged = report["judged_groundedness"]["mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&judged), "{report}");
    for answer in answers {
        assert!(answer["judged_supported"].as_u64().unwrap() <= answer["sentences"].as_u64().unwrap(), "{answer}");
    }
    assert_eq!(recorded("judged_groundedness").map(|r| r.0), Some(judged));
    assert!(stdout.contains("groundedness by the LLM judge"), "{stdout}");
    // The table and the report agree up to the rounding of the last digit.
    let (latency, reported) =
        (recorded("latency_median_ms").unwrap().0, report["latency_ms"]["total"].as_f64().unwrap());
    assert!((latency - reported).abs() <= 1e-9 * reported.abs(), "{latency} vs {reported}");
    assert!(evaluations.iter().all(|r| r.kind == "rag" && r.queries == 3 && r.model == report["generator"]));
    assert!(mean("raw_groundedness") <= 1.0);
    // The answer's words in the judged documents: each answer's share, their mean recorded.
    assert!(answers.iter().all(|a| (0.0..=1.0).contains(&a["relevant_words"].as_f64().unwrap())), "{report}");
    assert_eq!(recorded("relevant_words").map(|r| r.0), Some(mean("relevant_words")));
    // Each answer's places: the passages of relevant documents and the cited ones, which its flags restate.
    for answer in answers {
        let markers =
            |key: &str| -> Vec<u64> { answer[key].as_array().unwrap().iter().map(|m| m.as_u64().unwrap()).collect() };
        let (relevant, cited) = (markers("relevant_markers"), markers("cited"));
        assert_eq!(answer["context_has_relevant"].as_bool(), Some(!relevant.is_empty()), "{answer}");
        assert_eq!(answer["cites_relevant"].as_bool(), Some(cited.iter().any(|m| relevant.contains(m))), "{answer}");
        // The evidence quoted after a generated answer is among what it cites.
        let evidence = markers("evidence");
        assert!(evidence.iter().all(|m| cited.contains(m)), "{answer}");
        assert!(evidence.is_empty() || answer["mode"] == "generated", "{answer}");
    }
    assert!(mean("cites_relevant_without_evidence") <= mean("cites_relevant"), "{report}");
    assert_eq!(recorded("cites_relevant_without_evidence").map(|r| r.0), Some(mean("cites_relevant_without_evidence")));
    assert!(mean("context_recall") >= 2.0 / 3.0, "the topic's document is found: {report}");
}

/// `eval rag --reuse`: a question whose prompt is unchanged takes the
/// generator's answer from the earlier report, so a change to grounding is
/// measured without generating; a changed prompt is generated again.
#[test]
fn eval_rag_reuses_the_generation_of_an_unchanged_prompt() {
    let dir = tempfile::tempdir().unwrap();
    write_set(&dir.path().join("topics"), 0);
    let rag = "\n[rag]\nexpansions = 0\nmax_tokens = 32\n";
    let report = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(format!("{name}.json"))).unwrap()).unwrap()
    };
    let raw = |report: &serde_json::Value| -> Vec<String> {
        report["answers"].as_array().unwrap().iter().map(|a| a["raw_answer"].as_str().unwrap().to_owned()).collect()
    };
    let (succeeded, printed) = eval_in(dir.path(), "first", rag, &["rag", "--questions", "3", "--k", "2"]);
    assert!(succeeded, "{printed}");
    let first = report("first");
    assert_eq!(first["reused"], 0);
    assert!(first["answers"].as_array().unwrap().iter().all(|a| a["prompt"].as_str().unwrap().len() == 32), "{first}");

    // Grounding changed, prompts not: every answer's generation reused, nothing timed.
    let earlier = dir.path().join("first.json");
    let earlier = earlier.to_str().unwrap();
    let lenient = format!("{rag}min_overlap = 0.0\n");
    let (succeeded, printed) =
        eval_in(dir.path(), "regrounded", &lenient, &["rag", "--questions", "3", "--k", "2", "--reuse", earlier]);
    assert!(succeeded, "{printed}");
    let regrounded = report("regrounded");
    assert_eq!((regrounded["reused"].as_u64(), regrounded["min_overlap"].as_f64()), (Some(3), Some(0.0)));
    assert_eq!(raw(&regrounded), raw(&first));
    assert!(printed.contains("generation reused from the earlier report            3 of 3 answers"), "{printed}");
    let rows = twinflow_sinks::evaluations::read_evaluations(&dir.path().join("regrounded")).unwrap();
    assert!(rows.iter().any(|r| r.metric == "cites_relevant"), "{rows:?}");
    assert!(!rows.iter().any(|r| r.metric.starts_with("latency")), "reused generation is not timed: {rows:?}");

    // Three passages make other prompts: generated again.
    let (succeeded, printed) =
        eval_in(dir.path(), "wider", rag, &["rag", "--questions", "3", "--k", "3", "--reuse", earlier]);
    assert!(succeeded, "{printed}");
    assert_eq!(report("wider")["reused"], 0);

    // A report of another set is refused.
    let mut other = first.clone();
    other["set"] = "another".into();
    std::fs::write(dir.path().join("other.json"), other.to_string()).unwrap();
    let other = dir.path().join("other.json");
    let (succeeded, printed) =
        eval_in(dir.path(), "refused", rag, &["rag", "--questions", "3", "--reuse", other.to_str().unwrap()]);
    assert!(!succeeded && printed.contains("measured the set \"another\""), "{printed}");
}

/// `twinflow eval rag --context-only`: every judged question's prompt built,
/// nothing generated; the topic's document reaches the prompt.
#[test]
fn eval_rag_context_only_builds_every_prompt_without_generating() {
    let (stdout, report, evaluations) =
        run_eval("\n[rag]\npassage_tokens = 24\n", &["rag", "--context-only", "--k", "3"]);
    assert!(stdout.contains("context recall") && stdout.contains("tokens"), "{stdout}");
    assert_eq!((report["questions"].as_u64(), report["k"].as_u64()), (Some(12), Some(3)));
    assert!(report["context_recall"]["mean"].as_f64().unwrap() >= 11.0 / 12.0, "{report}");
    let first = report["first_relevant"].as_array().unwrap();
    assert_eq!(first.len(), 12);
    assert!(first.iter().filter(|f| f[1] == 1).count() >= 10, "the topic's document placed first: {report}");
    // The table gives the same places as the report, as shares of the questions.
    let share = |keep: &dyn Fn(&serde_json::Value) -> bool| {
        (100.0 * first.iter().filter(|f| keep(&f[1])).count() as f64 / 12.0).round()
    };
    let places = format!(
        "1: {}%, 2: {}%, 3: {}%, later: {}%, none: {}%",
        share(&|at| *at == 1),
        share(&|at| *at == 2),
        share(&|at| *at == 3),
        share(&|at| at.as_u64().is_some_and(|a| a > 3)),
        share(&|at| at.is_null()),
    );
    assert!(stdout.contains(&format!("first relevant passage at place                     {places}")), "{stdout}");
    // Three focused passages of at most 24 tokens each, and the question and instructions.
    assert!(report["prompt_tokens"].as_f64().unwrap() < 220.0, "{report}");
    assert!(evaluations.iter().all(|r| r.kind == "rag-context" && r.queries == 12), "{evaluations:?}");
    assert!(evaluations.iter().any(|r| r.metric == "context_recall" && r.setting.contains("passage_tokens=24")));
}

/// `eval rag` searches as the data directory's server would: with its
/// active retrieval setting, which every row's setting names.
#[test]
fn eval_rag_searches_with_the_active_retrieval_setting() {
    let promote = |data: &Path| {
        let dir = data.join("_models").join("retrieval");
        let registry = twinflow_models::Registry::<twinflow_models::RetrievalCard>::open(&dir).unwrap();
        let mut card = crate::fixtures::retrieval_card(0.3, 7.0);
        (card.vector_weight, card.lead_weight) = (1.0, 0.5);
        let card = registry.register(card, |_| Ok(()), &[]).unwrap();
        registry.promote(card.version, "promoted by the test").unwrap();
    };
    let (stdout, _, evaluations) = run_eval_on("", &["rag", "--context-only", "--k", "3"], promote);
    assert!(stdout.contains("the active retrieval setting is version 1"), "{stdout}");
    assert!(!evaluations.is_empty());
    for row in &evaluations {
        assert!(row.setting.ends_with("hybrid(bm25=0.3, leads=0.5, rrf_k=7)"), "{}", row.setting);
    }
}

/// `twinflow eval twin` on a data directory with no dataset version says what to do.
#[test]
fn eval_twin_without_a_dataset_says_how_to_make_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("twinflow.toml");
    std::fs::write(&config, format!("[storage]\ndata_dir = {:?}\n", dir.path().join("data").display().to_string()))
        .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_twinflow"))
        .arg("--config")
        .arg(&config)
        .args(["eval", "twin"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no dataset version yet") && stderr.contains("twinflow datasets snapshot"), "{stderr}");
}
