//! Hostile GGUF headers: random and mutated bytes behind the magic never
//! panic or allocate by a count the file cannot hold; they parse or are
//! refused with an error that names the file.

use std::path::Path;

use proptest::prelude::*;

use twinflow_models::gguf::Gguf;

/// A small valid GGUF v3: two metadata entries (a string, an array of u32)
/// and no tensors.
fn valid() -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes()); // tensors
    out.extend(2u64.to_le_bytes()); // metadata entries
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    };
    string(&mut out, "general.name");
    out.extend(8u32.to_le_bytes());
    string(&mut out, "tiny");
    string(&mut out, "tokenizer.ids");
    out.extend(9u32.to_le_bytes());
    out.extend(4u32.to_le_bytes());
    out.extend(3u64.to_le_bytes());
    for v in [1u32, 2, 3] {
        out.extend(v.to_le_bytes());
    }
    out
}

#[test]
fn the_valid_header_parses() {
    let gguf = Gguf::parse(Path::new("tiny.gguf"), valid()).unwrap();
    assert_eq!(gguf.metadata.len(), 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn mutated_headers_parse_or_are_refused(edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..8)) {
        let mut bytes = valid();
        twinflow_schemas::testing::mutate(&mut bytes, &edits);
        if let Err(e) = Gguf::parse(Path::new("fuzz.gguf"), bytes) {
            prop_assert!(e.to_string().contains("fuzz.gguf"), "{e}");
        }
    }

    #[test]
    fn random_bytes_after_the_magic_parse_or_are_refused(tail in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut bytes = b"GGUF\x03\x00\x00\x00".to_vec();
        bytes.extend(tail);
        let _ = Gguf::parse(Path::new("fuzz.gguf"), bytes);
    }
}
