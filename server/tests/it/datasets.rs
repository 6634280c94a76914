//! Dataset versions: LLM-written pairs generated incrementally and cached,
//! curated snapshots (quality filter, near-duplicates, split by document,
//! preference triples) readable as Parquet, JSONL and SQL; and one pass of
//! the real SmolLM2 generator.

use std::sync::atomic::Ordering;
use std::time::Duration;

use twinflow_pipelines::training::Datasets;
use twinflow_schemas::{ChangeLimits, Split, parse_change};

use crate::fixtures::{QuestionDouble, app_with, article, upsert_line};

/// Questions of a test double (`QuestionDouble`): two made from the extract's words.
fn scripted_questions(extract: &str) -> String {
    let words: Vec<&str> = extract.split_whitespace().collect();
    format!(
        "Here you go:\n1. What does the passage say about {} and {}?\n2. Why does the author mention {}?\nHope this helps.",
        words[words.len() / 3],
        words[words.len() / 2],
        words[2 * words.len() / 3],
    )
}

/// Submits the NDJSON `lines` and waits until their epoch is committed; that epoch.
fn commit(app: &twinflow_server::App, lines: &[String]) -> u64 {
    let engine = app.engine().unwrap();
    let changes = lines.iter().map(|l| parse_change(l.as_bytes(), 1, &ChangeLimits::default()).unwrap()).collect();
    let epoch = engine.submit(changes).unwrap();
    engine.flush();
    assert!(engine.wait_committed(epoch, Duration::from_secs(60)));
    epoch
}

fn scripted() -> QuestionDouble {
    QuestionDouble::new(
        "scripted-test-double",
        scripted_questions,
        "It is an important question that many people have asked over the years, and it depends.",
    )
}

#[test]
fn generation_is_cached_and_incremental_and_snapshots_are_curated() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), |_| {});
    let lines = [
        upsert_line("rivers", "Rivers", &article("rivers and boats", 12)),
        upsert_line("taxes", "Taxes", &article("taxes and budgets", 12)),
        // The same text under another id: its LLM samples are near-duplicates of `rivers`'.
        upsert_line("rivers-copy", "Rivers again", &article("rivers and boats", 12)),
    ];
    commit(&app, &lines);

    let datasets = &app.training.datasets;
    let llm = scripted();
    let first = datasets.generate(&app.store, &llm, 2).unwrap();
    assert_eq!((first.generated, first.cached), (2, 0), "{first:?}");
    assert!(first.remaining > 0 && first.questions == 4, "{first:?}");
    let rest = datasets.generate(&app.store, &llm, 1000).unwrap();
    assert_eq!((rest.cached, rest.generated, rest.remaining), (2, first.remaining, 0), "{rest:?}");
    let again = datasets.generate(&app.store, &llm, 1000).unwrap();
    assert_eq!(again.generated, 0, "nothing new: nothing sent to the model");
    let calls = llm.calls.load(Ordering::SeqCst);

    // An edit: only the changed extracts go to the model; the cache survives a reopen.
    let edited = upsert_line(
        "taxes",
        "Taxes",
        &format!(
            "{}\n\nA new closing paragraph about tariffs and the customs houses of the ports.",
            article("taxes and budgets", 12)
        ),
    );
    let epoch = commit(&app, &[edited]);
    let reopened = Datasets::open(&app.store).unwrap();
    assert_eq!(reopened.cached(), calls);
    let after_edit = reopened.generate(&app.store, &llm, 1000).unwrap();
    assert!(after_edit.generated >= 1 && after_edit.generated < after_edit.extracts, "{after_edit:?}");

    let version = reopened.snapshot(&app.store).unwrap();
    assert_eq!(version.version, 1);
    assert!(version.duplicates > 0, "the copy's samples are near-duplicates: {version:?}");
    assert!(version.generators.keys().any(|g| g.starts_with("llm:scripted-test-double@p")), "{version:?}");
    assert!(version.generators.contains_key("offline-v1"), "{version:?}");
    assert!(version.preference > 0 && version.train > 0, "{version:?}");
    let samples = twinflow_sinks::datasets::read_instruct_version(app.store.data_dir(), 1).unwrap();
    assert_eq!(samples.len(), version.train + version.test);
    for sample in &samples {
        assert_eq!(sample.split, twinflow_dataflow::text::split_for(&sample.doc_id), "split by document");
    }
    let test_docs: std::collections::BTreeSet<_> =
        samples.iter().filter(|s| s.split == Split::Test).map(|s| &s.doc_id).collect();
    assert!(samples.iter().filter(|s| s.split == Split::Train).all(|s| !test_docs.contains(&s.doc_id)));

    let version_dir = twinflow_sinks::datasets::version_dir(app.store.data_dir(), "instruct", 1);
    let train = std::fs::read_to_string(version_dir.join("train.jsonl")).unwrap();
    let line: serde_json::Value = serde_json::from_str(train.lines().next().unwrap()).unwrap();
    assert_eq!(line["messages"][0]["role"], "user");
    let preference = std::fs::read_to_string(version_dir.join("preference.jsonl")).unwrap();
    let triple: serde_json::Value = serde_json::from_str(preference.lines().next().unwrap()).unwrap();
    assert!(triple["rejected"].as_str().unwrap().starts_with("It is an important question"), "{triple}");
    assert!(triple["chosen"].as_str().unwrap().len() > 200, "the author's extract: {triple}");
    let manifest = twinflow_sinks::datasets::read_manifest(app.store.data_dir(), "instruct", 1).unwrap();
    assert_eq!(manifest["lineage"]["source_epoch"], epoch);
    assert_eq!(manifest["content_hash"], version.content_hash);

    // A second version, and SQL over both.
    let v2 = reopened.snapshot(&app.store).unwrap();
    assert_eq!((v2.version, &v2.content_hash), (2, &version.content_hash), "same data, same content hash");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer = rt
        .block_on(app.store.sql("SELECT dataset_version, COUNT(*) AS n FROM instruct_dataset GROUP BY dataset_version ORDER BY dataset_version"))
        .unwrap();
    assert_eq!(answer.batches.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
    let answer =
        rt.block_on(app.store.sql("SELECT COUNT(*) FROM preference_dataset WHERE dataset_version = 1")).unwrap();
    let n = arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(answer.batches[0].column(0)).value(0);
    assert_eq!(n as usize, version.preference);
    app.shutdown().unwrap();
}

/// Retention: past the newest `keep_datasets`, a version goes unless it is
/// pinned or a registered model was trained on it; the store keeps the
/// table snapshots of the versions that stay (their lineage), and SQL sees
/// only those versions.
#[test]
fn old_dataset_versions_go_except_the_pinned_and_those_models_were_trained_on() {
    use twinflow_models::{Adapter, DatasetRef};
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), |config| {
        config.storage.keep_datasets = 2;
        config.storage.pinned_datasets = vec![1];
        config.storage.keep_snapshots = 1;
    });
    let datasets = &app.training.datasets;
    let mut snapshots = Vec::new();
    for round in 0..6 {
        let line = upsert_line(&format!("doc-{round}"), "Rivers", &article(&format!("rivers in year {round}"), 10));
        commit(&app, &[line]);
        let version = datasets.snapshot(&app.store).unwrap();
        snapshots.push(version.tables_snapshot);
        if version.version == 3 {
            // An adapter trained on version 3 (registered as training would).
            let dataset = DatasetRef {
                name: "instruct".into(),
                version: 3,
                epoch: version.source_epoch,
                content_hash: version.content_hash.clone(),
                train_pairs: version.train,
                test_pairs: version.test,
            };
            let card =
                crate::fixtures::adapter_card(app.engine().unwrap().embedder().dim(), dataset, "a test of lineage");
            let dim = card.dim;
            app.training.registry.register_adapter(card, &Adapter::identity(dim), &[]).unwrap();
        }
    }
    let data = app.store.data_dir();
    assert_eq!(
        twinflow_sinks::datasets::versions(data, "instruct"),
        [1, 3, 5, 6],
        "pinned v1, v3 trained on, newest two"
    );
    assert!(!twinflow_sinks::datasets::version_dir(data, "instruct", 2).exists());
    // The table snapshots held for removed versions go with the next snapshot.
    app.store.snapshot().unwrap();
    for (i, snapshot) in snapshots.iter().enumerate() {
        let kept = [0, 2, 4, 5].contains(&i);
        let folder = data.join(format!("chunks/_snapshots/v{snapshot}"));
        assert_eq!(folder.exists(), kept, "the table snapshot of dataset v{}", i + 1);
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer = rt
        .block_on(app.store.sql("SELECT DISTINCT dataset_version FROM instruct_dataset ORDER BY dataset_version"))
        .unwrap();
    let seen: Vec<u64> = answer
        .batches
        .iter()
        .flat_map(|b| {
            arrow::array::AsArray::as_primitive::<arrow::datatypes::UInt64Type>(b.column(0)).values().to_vec()
        })
        .collect();
    assert_eq!(seen, [1, 3, 5, 6]);
    app.shutdown().unwrap();
}

/// The real local generator writes questions for an extract and answers
/// the first (SmolLM2-135M: what it writes is filtered later).
#[test]
fn smollm2_generates_pairs_from_an_extract() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(dir.path(), |_| {});
    let line =
        upsert_line("treaty", "The Treaty", &article("the treaty with Spain and the navigation of the Mississippi", 6));
    commit(&app, &[line]);
    let generator = app.generator.get().expect("SmolLM2 loads (fetched by `twinflow models fetch`)");
    let report = app.training.datasets.generate(&app.store, generator.as_ref(), 1).unwrap();
    eprintln!("SmolLM2 generation pass: {report:?}");
    assert_eq!((report.generated, report.failures), (1, 0), "{report:?}");
    assert!(report.questions >= 1, "SmolLM2 writes questions one per line: {report:?}");
    let again = app.training.datasets.generate(&app.store, generator.as_ref(), 1).unwrap();
    assert_eq!(again.cached, 1);
    app.shutdown().unwrap();
}
