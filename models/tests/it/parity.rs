//! Parity with sentence-transformers 6.2.0 on the same weights
//! (`tests/data/minilm_reference_embeddings.json`: token ids and full
//! normalised vectors of 5 sentences, one with accents and an emoji).

use serde::Deserialize;

use twinflow_models::SentenceEncoder;

use crate::{assert_unit, cosine, max_abs_diff, minilm, minilm_burn_graph};

#[derive(Deserialize)]
struct Reference {
    dim: usize,
    max_seq_length: usize,
    model_safetensors_sha256: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    text: String,
    input_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Reference {
    // Resolved at run time: cargo sets CARGO_MANIFEST_DIR for test runs, and a
    // cached binary built in another checkout must not point there.
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
    let path = std::path::Path::new(&dir).join("tests/data/minilm_reference_embeddings.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn minilm_matches_sentence_transformers_on_the_fused_cpu_path() {
    assert_eq!(minilm().kernels(), "fused-cpu");
    check_parity(minilm());
}

#[test]
fn minilm_matches_sentence_transformers_through_the_burn_graph() {
    assert_eq!(minilm_burn_graph().kernels(), "burn-graph");
    check_parity(minilm_burn_graph());
}

fn check_parity(encoder: &SentenceEncoder) {
    let reference = reference();
    assert_eq!(encoder.dim(), reference.dim);
    assert_eq!(encoder.max_tokens(), reference.max_seq_length);
    let hash = &reference.model_safetensors_sha256[..12];
    assert_eq!(encoder.model_id(), format!("all-MiniLM-L6-v2@{hash}"));

    let texts: Vec<&str> = reference.items.iter().map(|i| i.text.as_str()).collect();
    for item in &reference.items {
        let ids = encoder.tokenizer().encode(&item.text).unwrap();
        assert_eq!(ids, item.input_ids, "token ids of {:?}", item.text);
    }
    // All five in one padded batch, and each alone.
    let batch = encoder.embed(&texts).unwrap();
    let mut worst = f32::INFINITY;
    let mut worst_diff = 0f32;
    for (item, v) in reference.items.iter().zip(&batch) {
        assert_unit(v, reference.dim, &item.text);
        let alone = encoder.embed(&[&item.text]).unwrap();
        for got in [v, &alone[0]] {
            let c = cosine(got, &item.embedding);
            worst = worst.min(c);
            worst_diff = worst_diff.max(max_abs_diff(got, &item.embedding));
            assert!(c >= 0.9999, "{:?}: cosine {c}", item.text);
        }
    }
    println!("parity ({}): min cosine {worst:.7}, max |diff| {worst_diff:.2e}", encoder.kernels());
}
