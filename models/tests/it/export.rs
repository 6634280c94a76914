//! A fine-tuned model exported for other runtimes reads back as the model
//! twinflow runs: small random Llama, Qwen2 and Qwen3 GGUFs (from
//! `architectures`) with a random LoRA adapter merged in memory are the
//! expected logits; the GGUF export loaded by our loader, the GGUF export
//! and the safetensors export run by the NumPy reference forward pass (the
//! GGUF read by the `gguf` package), and the PEFT adapter applied to the
//! base model's safetensors by NumPy must all give them.

use std::collections::BTreeMap;
use std::process::Command;

use twinflow_models::cpu_device;
use twinflow_models::gguf::{GgmlType, Gguf};
use twinflow_models::llama::export::{export_gguf, export_peft, export_safetensors};
use twinflow_models::llama::{KvCache, LlamaConfig, LlamaModel};
use twinflow_models::{LoraTarget, LoraWeights};
use twinflow_schemas::rng::SeededRng;

use crate::architectures::{Spec, VOCAB, gguf_py, reference, write_model};

/// `base + (α/r)·B·A` of every adapted module, against the merged export, in NumPy.
const PEFT_CHECK: &str = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
from reference_forward import read_safetensors
base, merged, adapter = (read_safetensors(p) for p in sys.argv[2:5])
config = json.load(open(sys.argv[5]))
scale = config["lora_alpha"] / config["r"]
worst, checked = 0.0, 0
for name, a in adapter.items():
    if not name.endswith("lora_A.weight"):
        continue
    module = name[len("base_model.model."):-len(".lora_A.weight")]
    b = adapter[name.replace("lora_A", "lora_B")]
    expected = base[module + ".weight"] + scale * b @ a
    worst = max(worst, float(abs(merged[module + ".weight"] - expected).max()))
    checked += 1
print(checked, worst)
"#;

fn random_lora(config: &LlamaConfig, rng: &mut SeededRng) -> LoraWeights {
    let rank = 4;
    let mut factors = BTreeMap::new();
    for layer in 0..config.num_layers {
        for target in LoraTarget::ALL {
            let (d_in, d_out) = match target {
                LoraTarget::Q => (config.hidden_size, config.q_dim()),
                LoraTarget::K | LoraTarget::V => (config.hidden_size, config.kv_dim()),
                LoraTarget::O => (config.q_dim(), config.hidden_size),
            };
            let mut values = |n: usize| (0..n).map(|_| (rng.unit() as f32 - 0.5) * 0.2).collect::<Vec<f32>>();
            factors.insert((layer, target), (values(d_in * rank), values(rank * d_out)));
        }
    }
    LoraWeights::from_factors(rank, 8.0, factors).unwrap()
}

fn last_logits(model: &LlamaModel, ids: &[u32]) -> Vec<f32> {
    model.step(ids, &mut KvCache::default()).unwrap()
}

fn assert_close(what: &str, got: &[f32], expected: &[f32]) {
    let scale = expected.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let diff = got.iter().zip(expected).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(got.len() == expected.len() && diff <= 1e-3 * scale, "{what}: differs by {diff} (logits up to {scale})");
}

fn round_trip(spec: Spec, seed: u64) {
    if !gguf_py() {
        return;
    }
    let mut rng = SeededRng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.gguf");
    write_model(&spec, &path, &mut rng);
    let base = Gguf::open(&path).unwrap();
    let config = LlamaConfig::from_gguf(&base).unwrap();
    let lora = random_lora(&config, &mut rng);
    let ids: Vec<u32> = (0..10).map(|_| rng.below(VOCAB as u64) as u32).collect();
    let device = cpu_device();
    let mut merged = LlamaModel::from_gguf(&base, 64, &device).unwrap();
    let untouched = last_logits(&merged, &ids);
    merged.merge_lora(&lora).unwrap();
    let expected = last_logits(&merged, &ids);
    let moved = expected.iter().zip(&untouched).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(moved > 0.05, "{:?}: the adapter changes nothing ({moved})", spec.arch);

    // GGUF: our loader and the reference forward pass (through the gguf package) on the file.
    let gguf_out = dir.path().join("twin.gguf");
    let written = export_gguf(&base, Some(&lora), "twin-v1", &gguf_out).unwrap();
    assert_eq!(written.merged, 4 * config.num_layers);
    let exported = Gguf::open(&gguf_out).unwrap();
    assert_eq!(exported.get_str("general.name").unwrap(), "twin-v1");
    assert_eq!(exported.tensors.len(), base.tensors.len());
    assert_eq!(exported.tensors["blk.0.attn_q.weight"].ty, GgmlType::F32);
    assert_eq!(exported.tensors["blk.0.ffn_up.weight"].ty, base.tensors["blk.0.ffn_up.weight"].ty);
    let reloaded = LlamaModel::from_gguf(&exported, 64, &device).unwrap();
    assert_close(&format!("{:?} gguf export, our loader", spec.arch), &last_logits(&reloaded, &ids), &expected);
    let by_numpy = reference(&gguf_out, &ids, dir.path());
    assert_close(&format!("{:?} gguf export, numpy", spec.arch), &by_numpy[ids.len() - 1], &expected);

    // safetensors in the Hugging Face layout, run by the reference.
    let hf = dir.path().join("hf");
    export_safetensors(&base, Some(&lora), &hf).unwrap();
    let config_json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config_json["model_type"], spec.arch.name());
    let by_numpy = reference(&hf, &ids, dir.path());
    assert_close(&format!("{:?} safetensors export, numpy", spec.arch), &by_numpy[ids.len() - 1], &expected);

    // PEFT: the bare adapter on the base model's safetensors is the merged model.
    let (plain, peft) = (dir.path().join("plain"), dir.path().join("peft"));
    export_safetensors(&base, None, &plain).unwrap();
    export_peft(&base, &lora, "base", &peft).unwrap();
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");
    let out = Command::new("python3")
        .args(["-c", PEFT_CHECK, data])
        .arg(plain.join("model.safetensors"))
        .arg(hf.join("model.safetensors"))
        .arg(peft.join("adapter_model.safetensors"))
        .arg(peft.join("adapter_config.json"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    let (checked, worst) = printed.trim().split_once(' ').unwrap();
    assert_eq!(checked.parse::<usize>().unwrap(), 4 * config.num_layers, "{printed}");
    assert!(worst.parse::<f64>().unwrap() < 1e-5, "{:?}: PEFT update off by {worst}", spec.arch);
}

#[test]
fn llama_exports_read_back_as_the_merged_model() {
    // Without rope_freqs: Llama 3.1's factors have no safetensors form here.
    round_trip(Spec::llama3(false), 11);
}

#[test]
fn qwen2_exports_read_back_as_the_merged_model() {
    round_trip(Spec::qwen2(), 12);
}

#[test]
fn qwen3_exports_read_back_as_the_merged_model() {
    round_trip(Spec::qwen3(), 13);
}
