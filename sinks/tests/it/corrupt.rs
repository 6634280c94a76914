//! Damaged files stop `Store::open` with an error that names the file and
//! says what to do.

use twinflow_sinks::{Error, Store};

use crate::fixtures::*;

fn committed_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();
    commit_all(&store, &mut Oracle::default(), &scenario()[..2]);
    dir
}

fn open_error(dir: &std::path::Path) -> Error {
    Store::open(dir, DIM).expect_err("opening a damaged directory must fail")
}

#[test]
fn garbage_or_truncated_manifest() {
    let dir = committed_dir();
    let manifest = dir.path().join("_manifest.json");
    let good = std::fs::read(&manifest).unwrap();

    std::fs::write(&manifest, &good[..good.len() / 2]).unwrap();
    let err = open_error(dir.path());
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("_manifest.json") && msg.contains("is corrupt") && msg.contains("backup"), "{msg}");

    std::fs::write(&manifest, b"\x00\x01 not json").unwrap();
    assert!(open_error(dir.path()).to_string().contains("_manifest.json"));

    std::fs::write(&manifest, &good).unwrap();
    assert_eq!(Store::open(dir.path(), DIM).unwrap().committed_epoch(), 2);
}

#[test]
fn truncated_or_missing_parquet_file() {
    let dir = committed_dir();
    let part = dir.path().join("chunks/epoch=1/part-0.parquet");
    let good = std::fs::read(&part).unwrap();

    std::fs::write(&part, &good[..good.len() - 20]).unwrap();
    let err = open_error(dir.path());
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("chunks/epoch=1/part-0.parquet") && msg.contains("Parquet"), "{msg}");

    std::fs::remove_file(&part).unwrap();
    let msg = open_error(dir.path()).to_string();
    assert!(msg.contains("chunks/epoch=1/part-0.parquet") && msg.contains("missing"), "{msg}");
}

#[test]
fn another_embedding_dimension_is_refused() {
    let dir = committed_dir();
    let err = Store::open(dir.path(), DIM + 1).unwrap_err();
    assert!(matches!(err, Error::DimensionMismatch { stored: DIM, .. }), "{err:?}");
}
