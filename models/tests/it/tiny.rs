//! A tiny random BERT (2 layers, hidden 32, 4 heads, vocab 65 of 100) written
//! as a sentence-transformers model directory and run through
//! `SentenceEncoder`: loading, tokenizing, batching, padding, truncation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, tensor::TensorView};
use serde_json::json;
use sha2::{Digest, Sha256};
use twinflow_models::{SentenceEncoder, cpu_device};
use twinflow_schemas::rng::SeededRng;

use crate::{assert_unit, max_abs_diff};

const HIDDEN: usize = 32;
const LAYERS: usize = 2;
const INTERMEDIATE: usize = 64;
const POSITIONS: usize = 64;
const VOCAB: usize = 100;
const MAX_TOKENS: usize = 16;

/// `[PAD] [UNK] [CLS] [SEP] [MASK]`, letters, `##`letters, a few words.
fn vocab() -> serde_json::Map<String, serde_json::Value> {
    let mut tokens: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from).to_vec();
    tokens.extend(('a'..='z').map(String::from));
    tokens.extend(('a'..='z').map(|c| format!("##{c}")));
    tokens.extend(["the", "cat", "sat", "on", "mat", ".", ",", "!"].map(String::from));
    tokens.into_iter().enumerate().map(|(id, t)| (t, json!(id))).collect()
}

fn tokenizer_json() -> serde_json::Value {
    let special = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": false, "special": true})
    };
    json!({
        "version": "1.0",
        // As all-MiniLM-L6-v2's file: a fixed padding and truncation the encoder must undo.
        "truncation": {"max_length": 8, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 8}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [special(0, "[PAD]"), special(1, "[UNK]"), special(2, "[CLS]"),
                         special(3, "[SEP]"), special(4, "[MASK]")],
        "normalizer": {"type": "BertNormalizer", "clean_text": true,
                       "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}},
                     {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
            "special_tokens": {
                "[CLS]": {"id": "[CLS]", "ids": [2], "tokens": ["[CLS]"]},
                "[SEP]": {"id": "[SEP]", "ids": [3], "tokens": ["[SEP]"]}
            }
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab()}
    })
}

/// Every tensor of a Hugging Face BertModel checkpoint, with its shape.
fn tensor_shapes() -> Vec<(String, Vec<usize>)> {
    let (h, i) = (HIDDEN, INTERMEDIATE);
    let mut shapes = vec![
        ("embeddings.word_embeddings.weight".to_string(), vec![VOCAB, h]),
        ("embeddings.position_embeddings.weight".into(), vec![POSITIONS, h]),
        ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
        // Present in real checkpoints, unused by mean pooling.
        ("pooler.dense.weight".into(), vec![h, h]),
        ("pooler.dense.bias".into(), vec![h]),
    ];
    for n in 0..LAYERS {
        let p = format!("encoder.layer.{n}");
        for (name, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", i, h),
            ("output.dense", h, i),
        ] {
            shapes.push((format!("{p}.{name}.weight"), vec![out, inp]));
            shapes.push((format!("{p}.{name}.bias"), vec![out]));
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            shapes.push((format!("{p}.{name}.weight"), vec![h]));
            shapes.push((format!("{p}.{name}.bias"), vec![h]));
        }
    }
    shapes
}

/// Deterministic pseudo-random weights; LayerNorm scales near 1.
fn write_weights(path: &Path) {
    let mut rng = SeededRng::new(0x9e37_79b9_7f4a_7c15);
    let mut next = move || rng.unit() as f32 - 0.5;
    let shapes = tensor_shapes();
    let bytes: Vec<Vec<u8>> = shapes
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let base = if name.contains("LayerNorm.weight") { 1.0 } else { 0.0 };
            (0..n).flat_map(|_| (base + 0.4 * next()).to_le_bytes()).collect()
        })
        .collect();
    let mut views: Vec<(String, TensorView<'_>)> = shapes
        .iter()
        .zip(&bytes)
        .map(|((name, shape), data)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), data).unwrap();
            (name.clone(), view)
        })
        .collect();
    // As real checkpoints: an I64 position_ids buffer the loader must skip.
    let positions: Vec<u8> = (0..POSITIONS as i64).flat_map(i64::to_le_bytes).collect();
    views
        .push(("embeddings.position_ids".into(), TensorView::new(Dtype::I64, vec![1, POSITIONS], &positions).unwrap()));
    let file = safetensors::serialize(views, None::<HashMap<String, String>>).unwrap();
    std::fs::write(path, file).unwrap();
}

/// A model directory `<tmp>/tiny-bert-<pid>-<tag>/tiny-bert`.
pub(crate) fn model_dir(tag: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("tiny-bert-{}-{tag}", std::process::id()));
    let dir = root.join("tiny-bert");
    std::fs::create_dir_all(&dir).unwrap();
    let config = json!({
        "architectures": ["BertModel"], "model_type": "bert", "hidden_act": "gelu",
        "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": 4,
        "intermediate_size": INTERMEDIATE, "max_position_embeddings": POSITIONS,
        "vocab_size": VOCAB, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
        "hidden_dropout_prob": 0.1
    });
    let write = |name: &str, value: serde_json::Value| {
        std::fs::write(dir.join(name), serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    };
    write("config.json", config);
    write("tokenizer.json", tokenizer_json());
    write("sentence_bert_config.json", json!({"max_seq_length": MAX_TOKENS, "do_lower_case": false}));
    write_weights(&dir.join("model.safetensors"));
    dir
}

fn load(tag: &str) -> (SentenceEncoder, PathBuf) {
    let dir = model_dir(tag);
    let encoder = SentenceEncoder::load(&dir, &cpu_device()).unwrap();
    (encoder, dir)
}

pub(crate) fn cleanup(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn tiny_model_loads_with_its_config_and_a_weight_hash_in_its_id() {
    let (encoder, dir) = load("id");
    assert_eq!(encoder.dim(), HIDDEN);
    assert_eq!(encoder.max_tokens(), MAX_TOKENS);
    let digest = Sha256::digest(std::fs::read(dir.join("model.safetensors")).unwrap());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(encoder.model_id(), format!("tiny-bert@{}", &hex[..12]));
    cleanup(&dir);
}

#[test]
fn tiny_model_gives_unit_vectors_in_input_order() {
    let (encoder, dir) = load("order");
    let texts = ["the cat", "the cat sat on the mat.", "cat", "", "mat, sat!"];
    let alone = load_again(&dir).with_batch_size(1).embed(&texts).unwrap();
    let together = encoder.with_batch_size(2).embed(&texts).unwrap();
    assert_eq!(together.len(), texts.len());
    for ((text, v), single) in texts.iter().zip(&together).zip(&alone) {
        assert_unit(v, HIDDEN, text);
        // In a batch of one, with no padding: the same vector.
        let diff = max_abs_diff(v, single);
        assert!(diff < 1e-5, "{text:?}: differs by {diff} alone and in a batch");
    }
    assert!(max_abs_diff(&together[0], &together[1]) > 1e-3);
    cleanup(&dir);
}

#[test]
fn fused_cpu_path_and_burn_graph_give_the_same_vectors() {
    let (fused, dir) = load("paths");
    let graph = load_again(&dir).with_burn_graph();
    assert_eq!((fused.kernels(), graph.kernels()), ("fused-cpu", "burn-graph"));
    let texts = ["the cat", "the cat sat on the mat.", "", "mat, sat! the cat sat on the mat, the cat sat."];
    let a = fused.with_batch_size(3).embed(&texts).unwrap();
    let b = graph.with_batch_size(3).embed(&texts).unwrap();
    for ((text, x), y) in texts.iter().zip(&a).zip(&b) {
        let diff = max_abs_diff(x, y);
        assert!(diff < 1e-5, "{text:?}: the two paths differ by {diff}");
    }
    cleanup(&dir);
}

fn load_again(dir: &Path) -> SentenceEncoder {
    SentenceEncoder::load(dir, &cpu_device()).unwrap()
}

#[test]
fn padding_in_a_batch_does_not_change_a_vector() {
    let (encoder, dir) = load("padding");
    let short = "the cat";
    let long = "the cat sat on the mat, the cat sat.";
    let alone = encoder.embed(&[short]).unwrap();
    let batch = encoder.embed(&[short, long]).unwrap();
    let diff = max_abs_diff(&alone[0], &batch[0]);
    assert!(diff < 1e-5, "padding changed the vector by {diff}");
    cleanup(&dir);
}

#[test]
fn long_texts_are_cut_at_max_tokens_and_counted_in_full() {
    let (encoder, dir) = load("truncate");
    let words: Vec<&str> = ["the", "cat", "sat", "on", "mat"].into_iter().cycle().take(40).collect();
    let long = words.join(" ");
    assert_eq!(encoder.count_tokens("the cat").unwrap(), 4);
    assert_eq!(encoder.count_tokens(&long).unwrap(), 42);
    let ids = encoder.tokenizer().encode(&long).unwrap();
    assert_eq!(ids.len(), MAX_TOKENS);
    assert_eq!((ids[0], ids[MAX_TOKENS - 1]), (2, 3), "[CLS] … [SEP] kept");
    // The kept tokens are the first ones: the same as the prefix that fits.
    let prefix = words[..MAX_TOKENS - 2].join(" ");
    let v = encoder.embed(&[&long, &prefix]).unwrap();
    assert!(max_abs_diff(&v[0], &v[1]) < 1e-5);
    cleanup(&dir);
}

#[test]
fn a_checkpoint_that_does_not_match_the_config_is_refused() {
    let dir = model_dir("mismatch");
    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48");
    std::fs::write(&config, text).unwrap();
    let err = SentenceEncoder::load(&dir, &cpu_device()).unwrap_err();
    assert!(err.to_string().contains("intermediate.dense.weight"), "{err}");
    cleanup(&dir);
}
