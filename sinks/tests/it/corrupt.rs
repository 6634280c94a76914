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

/// The input log opened over damaged segments (bytes flipped, cut, or
/// inserted anywhere): never a panic; either the batches it keeps are a
/// prefix of those written, or it refuses with the file and offset.
mod input_log_damage {
    use proptest::prelude::*;

    use twinflow_schemas::{DocumentChange, DocumentKind};
    use twinflow_sinks::{EncodedBatch, InputLog};

    fn change(i: usize) -> DocumentChange {
        serde_json::from_value(serde_json::json!({
            "op": "upsert", "doc_id": format!("d{i}"), "kind": DocumentKind::Post,
            "content": format!("text number {i} of the log"),
        }))
        .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        #[test]
        fn a_damaged_log_opens_to_a_prefix_or_refuses(edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..5)) {
            let dir = tempfile::tempdir().unwrap();
            let written: Vec<Vec<DocumentChange>> = (0..4).map(|b| (0..3).map(|i| change(b * 3 + i)).collect()).collect();
            {
                let (log, _) = InputLog::open(dir.path()).unwrap();
                for (epoch, batch) in written.iter().enumerate() {
                    log.append(epoch as u64 + 1, &EncodedBatch::new(batch).unwrap()).unwrap();
                }
            }
            let segments: Vec<_> = std::fs::read_dir(dir.path().join("_input_log")).unwrap()
                .filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect();
            let segment = segments.last().unwrap();
            let mut bytes = std::fs::read(segment).unwrap();
            twinflow_schemas::testing::mutate(&mut bytes, &edits);
            std::fs::write(segment, &bytes).unwrap();
            match InputLog::open(dir.path()) {
                Ok((_, batches)) => {
                    let got: Vec<_> = batches.iter().map(|b| b.changes.clone()).collect();
                    prop_assert!(got.len() <= written.len() && got[..] == written[..got.len()], "not a prefix");
                }
                Err(e) => prop_assert!(e.to_string().contains(".log"), "{e}"),
            }
        }
    }
}
