//! Hostile inputs to the parsers of what clients and files send: NDJSON
//! changes and config files. Generated and mutated inputs never panic; every
//! refusal is an error value (with the line, for NDJSON).

use proptest::prelude::*;

use twinflow_schemas::ChangeLimits;
use twinflow_schemas::change::parse_ndjson;

/// A valid change line, then bytes flipped, cut or inserted in it.
fn mutated_line() -> impl Strategy<Value = Vec<u8>> {
    let valid = r#"{"op":"upsert","doc_id":"d1","kind":"article","author":"A","title":"T","content":"x y z"}"#;
    (prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..6)).prop_map(move |edits| {
        let mut line = valid.as_bytes().to_vec();
        twinflow_schemas::testing::mutate(&mut line, &edits);
        line
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn ndjson_of_random_bytes_is_parsed_or_refused_with_a_line(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let limits = ChangeLimits::default();
        if let Err(e) = parse_ndjson(&body, &limits) {
            let lines = body.split(|b| *b == b'\n').count();
            prop_assert!(e.line >= 1 && e.line <= lines, "line {} of {}", e.line, lines);
        }
    }

    #[test]
    fn mutated_change_lines_are_parsed_or_refused(lines in prop::collection::vec(mutated_line(), 1..6)) {
        let body = lines.join(&b'\n');
        let limits = ChangeLimits { max_document_bytes: 64, ..ChangeLimits::default() };
        match parse_ndjson(&body, &limits) {
            Ok(changes) => prop_assert!(changes.len() <= lines.len()),
            Err(e) => prop_assert!(!e.message.is_empty() && e.line >= 1),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A config file of random text, or a real one with a value swapped for
    /// another type, loads or is refused with an error: never a panic.
    #[test]
    fn config_files_load_or_are_refused(
        random in "[ -~\n]{0,200}",
        key in prop::sample::select(vec!["engine.workers", "server.addr", "server.max_body", "auth.mode",
            "auth.keys", "auth.session_ttl", "storage.data_dir", "chunking.article", "search.rrf_k"]),
        value in prop::sample::select(vec!["-1", "\"x\"", "[1, 2]", "{ a = 1 }", "1e400", "true", "\"99999999999GiB\"",
            "[{ name = \"k\", scopes = [\"root\"], sha256 = \"00\" }]"]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        for text in [random.clone(), {
            let (section, field) = key.split_once('.').unwrap();
            format!("[{section}]\n{field} = {value}\n")
        }] {
            let path = dir.path().join("twinflow.toml");
            std::fs::write(&path, &text).unwrap();
            let loaded = twinflow_schemas::config::layers::load(Some(&path), &Default::default());
            if let Err(e) = loaded {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }
}
