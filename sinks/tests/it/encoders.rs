//! JSON rows, CSV and Arrow IPC encodings of SQL answers.

use arrow::ipc::reader::StreamReader;
use twinflow_sinks::{Store, encode_arrow_ipc, encode_csv, encode_json_rows};

use crate::fixtures::*;

async fn store_with_scenario() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), DIM).unwrap();
    commit_all(&store, &mut Oracle::default(), &scenario());
    (dir, store)
}

#[tokio::test]
async fn json_rows_have_every_column() {
    let (_dir, store) = store_with_scenario().await;
    let answer =
        store.sql("SELECT doc_id, ordinal, text, NULL AS nothing FROM chunks ORDER BY doc_id, ordinal").await.unwrap();
    let rows = encode_json_rows(&answer.batches).unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["doc_id"], "a");
    assert_eq!(rows[0]["ordinal"], 0);
    assert_eq!(rows[0]["text"], "alpha two");
    assert!(rows[0]["nothing"].is_null());

    let docs = store.sql("SELECT fetched_at, version FROM documents ORDER BY doc_id LIMIT 1").await.unwrap();
    let rows = encode_json_rows(&docs.batches).unwrap();
    assert!(rows[0]["fetched_at"].as_str().unwrap().starts_with("2023-11-14T22:13:20"), "{rows:?}");

    let none = store.sql("SELECT * FROM chunks WHERE false").await.unwrap();
    assert!(encode_json_rows(&none.batches).unwrap().is_empty());
}

#[tokio::test]
async fn csv_has_a_header_and_flattens_vectors() {
    let (_dir, store) = store_with_scenario().await;
    let answer = store.sql("SELECT doc_id, ordinal FROM chunks ORDER BY doc_id, ordinal").await.unwrap();
    let csv = String::from_utf8(encode_csv(&answer.batches).unwrap()).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "doc_id,ordinal");
    assert_eq!(lines[1], "a,0");
    assert_eq!(lines.len(), 6);

    let empty = store.sql("SELECT doc_id FROM chunks WHERE false").await.unwrap();
    assert_eq!(String::from_utf8(encode_csv(&empty.batches).unwrap()).unwrap(), "doc_id\n");

    let vectors = store.sql("SELECT vector FROM embeddings ORDER BY chunk_id LIMIT 1").await.unwrap();
    let csv = String::from_utf8(encode_csv(&vectors.batches).unwrap()).unwrap();
    assert!(csv.starts_with("vector\n\"["), "{csv}");
}

#[tokio::test]
async fn arrow_ipc_reads_back() {
    let (_dir, store) = store_with_scenario().await;
    let answer = store.sql("SELECT * FROM embeddings ORDER BY chunk_id").await.unwrap();
    let bytes = encode_arrow_ipc(&answer.schema, &answer.batches).unwrap();
    let reader = StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    assert_eq!(reader.schema(), answer.schema);
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(pretty(&batches), pretty(&answer.batches));
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 4);
}
