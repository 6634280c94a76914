//! A fine-tuned model in the files other runtimes load:
//!
//! - **GGUF** (llama.cpp, Ollama, LM Studio): the base file's metadata and
//!   tensors, with every adapted projection replaced by `W + ΔW` in `f32`
//!   (the others keep their blocks, quantised or not).
//! - **safetensors** (transformers, vLLM, candle): the merged model in the
//!   Hugging Face layout (`model.layers.N.self_attn.q_proj.weight`, …) in
//!   `f32`, with its `config.json`, `generation_config.json` and the
//!   tokenizer (`tokenizer.json`, `tokenizer_config.json` with the chat template).
//! - **PEFT** (transformers' `peft`): the bare adapter, `adapter_model.safetensors`
//!   (`lora_A` `[r, in]`, `lora_B` `[out, r]`) and `adapter_config.json`.
//!
//! Layouts of Q and K: inside twinflow every head is in adjacent-pair RoPE
//! order ([`super::Weights`]); GGUF keeps that order for Llama and the
//! halves order for Qwen; Hugging Face keeps the halves order for all.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::lora::{GgufTarget, LoraTarget, LoraWeights};
use super::{Architecture, LlamaConfig, Weights, transpose};
use crate::gguf::{Gguf, GgufWriter, Meta, dequantize};
use crate::llama::tokenizer::ChatTokenizer;
use crate::{Error, Result};

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exported {
    /// The files, in the order written.
    pub files: Vec<std::path::PathBuf>,
    /// Projections that carry the adapter's update.
    pub merged: usize,
}

/// The base model `base` with `lora` merged, as one GGUF file at `out`
/// named `name` (`general.name`).
pub fn export_gguf(base: &Gguf, lora: Option<&LoraWeights>, name: &str, out: &Path) -> Result<Exported> {
    let config = LlamaConfig::from_gguf(base)?;
    let mut writer = GgufWriter::new();
    for key in base.metadata.keys() {
        // The writer aligns to 32 (the default): a different alignment would not describe its file.
        if key == "general.alignment" {
            continue;
        }
        if let Some(raw) = base.raw_meta(key) {
            writer.meta(key, raw);
        }
    }
    writer.meta("general.name", Meta::String(name.to_owned()));
    let deltas = deltas(&config, lora)?;
    let mut merged = 0;
    for (tensor, info) in &base.tensors {
        let (_, bytes) = base.tensor_bytes(tensor)?;
        match deltas.get(tensor.as_str()) {
            Some(delta) => {
                let mut values = dequantize(info.ty, bytes);
                let rows = from_internal_rows(&config, tensor, delta.clone(), gguf_halves(&config));
                if rows.len() != values.len() {
                    return Err(Error::Inference(format!("the update of {tensor} does not fit its {:?}", info.dims)));
                }
                values.iter_mut().zip(rows).for_each(|(w, d)| *w += d);
                writer.tensor_f32(tensor, &info.dims, &values)?;
                merged += 1;
            }
            None => {
                writer.tensor(tensor, &info.dims, info.ty, bytes.to_vec())?;
            }
        }
    }
    writer.write(out)?;
    Ok(Exported { files: vec![out.to_owned()], merged })
}

/// The base model `base` with `lora` merged, in the Hugging Face layout, into `dir`.
pub fn export_safetensors(base: &Gguf, lora: Option<&LoraWeights>, dir: &Path) -> Result<Exported> {
    let config = LlamaConfig::from_gguf(base)?;
    if base.tensors.contains_key("rope_freqs.weight") {
        return Err(Error::Config {
            path: base.path().to_owned(),
            reason: "Llama 3.1's RoPE factors (rope_freqs) have no safetensors form here: export as gguf".into(),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let weights = Weights::new(base, &config);
    let deltas = deltas(&config, lora)?;
    let (h, f, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
    let (qd, kv, d) = (config.q_dim(), config.kv_dim(), config.head_dim);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    tensors.push(("model.embed_tokens.weight".into(), vec![v, h], base.tensor_f32("token_embd.weight", &[h, v])?));
    let mut merged = 0;
    for layer in 0..config.num_layers {
        let p = format!("model.layers.{layer}");
        let gguf = |n: &str| format!("blk.{layer}.{n}.weight");
        for (name, ours, rows, cols) in [
            ("self_attn.q_proj", "attn_q", qd, h),
            ("self_attn.k_proj", "attn_k", kv, h),
            ("self_attn.v_proj", "attn_v", kv, h),
            ("self_attn.o_proj", "attn_output", h, qd),
            ("mlp.gate_proj", "ffn_gate", f, h),
            ("mlp.up_proj", "ffn_up", f, h),
            ("mlp.down_proj", "ffn_down", h, f),
        ] {
            let mut values = weights.matrix(layer, ours, rows, cols)?;
            if let Some(delta) = deltas.get(gguf(ours).as_str()) {
                values.iter_mut().zip(delta).for_each(|(w, d)| *w += d);
                merged += 1;
            }
            let values = from_internal_rows(&config, &gguf(ours), values, true);
            tensors.push((format!("{p}.{name}.weight"), vec![rows, cols], values));
        }
        if let Some(biases) = weights.qkv_bias(layer)? {
            for ((name, ours), values) in
                [("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v")].into_iter().zip(biases)
            {
                let n = values.len();
                let values = from_internal_rows(&config, &gguf(ours), values, true);
                tensors.push((format!("{p}.self_attn.{name}.bias"), vec![n], values));
            }
        }
        if let Some([q, k]) = weights.qk_norm(layer)? {
            tensors.push((format!("{p}.self_attn.q_norm.weight"), vec![d], unpermute_head(&q, d, 1)));
            tensors.push((format!("{p}.self_attn.k_norm.weight"), vec![d], unpermute_head(&k, d, 1)));
        }
        tensors.push((format!("{p}.input_layernorm.weight"), vec![h], base.tensor_f32(&gguf("attn_norm"), &[h])?));
        tensors.push((
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            base.tensor_f32(&gguf("ffn_norm"), &[h])?,
        ));
    }
    tensors.push(("model.norm.weight".into(), vec![h], base.tensor_f32("output_norm.weight", &[h])?));
    let tied = !base.tensors.contains_key("output.weight");
    if !tied {
        tensors.push(("lm_head.weight".into(), vec![v, h], base.tensor_f32("output.weight", &[h, v])?));
    }
    let mut files = vec![write_safetensors(&dir.join("model.safetensors"), &tensors)?];
    let arch = config.architecture;
    let (architecture, model_type) = match arch {
        Architecture::Llama => ("LlamaForCausalLM", "llama"),
        Architecture::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Architecture::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
    };
    let token = |key: &str| base.metadata.get(key).and_then(|v| v.as_u64());
    let linear = config.rope_divisors.first().copied().unwrap_or(1.0);
    let model_config = json!({
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": h,
        "intermediate_size": f,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": d,
        "max_position_embeddings": config.context_length,
        "rms_norm_eps": config.rms_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": if linear == 1.0 { json!(null) } else { json!({"type": "linear", "rope_type": "linear", "factor": linear}) },
        "vocab_size": v,
        "tie_word_embeddings": tied,
        "attention_bias": config.qkv_bias,
        "hidden_act": "silu",
        "bos_token_id": token("tokenizer.ggml.bos_token_id"),
        "eos_token_id": token("tokenizer.ggml.eos_token_id"),
        "torch_dtype": "float32",
    });
    files.push(write_json(&dir.join("config.json"), &model_config)?);
    files.push(write_json(
        &dir.join("generation_config.json"),
        &json!({"bos_token_id": token("tokenizer.ggml.bos_token_id"), "eos_token_id": token("tokenizer.ggml.eos_token_id")}),
    )?);
    if base.metadata.contains_key("tokenizer.ggml.merges") {
        let tokenizer = ChatTokenizer::from_gguf(base)?;
        files.push(tokenizer.save_hf(dir)?);
        files.push(write_json(&dir.join("tokenizer_config.json"), &tokenizer.hf_config())?);
    }
    Ok(Exported { files, merged })
}

/// `lora` alone in the PEFT layout, into `dir`, for the base model `base`
/// (named `base_name` in its config).
pub fn export_peft(base: &Gguf, lora: &LoraWeights, base_name: &str, dir: &Path) -> Result<Exported> {
    let config = LlamaConfig::from_gguf(base)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let r = lora.rank;
    let mut tensors = Vec::new();
    let mut modules = std::collections::BTreeSet::new();
    for ((layer, target), (a, b)) in &lora.factors {
        let (d_in, d_out) = target.dims(&config);
        let module = hf_module(*target);
        modules.insert(module);
        let prefix = format!("base_model.model.model.layers.{layer}.self_attn.{module}");
        // Ours: ΔW[in, out] = s·A·B, A [in, r], B [r, out]. PEFT: ΔW[out, in] = s·B'·A', A' [r, in], B' [out, r].
        let a_peft = transpose(a, d_in, r);
        let b_peft = transpose(b, r, d_out);
        let b_peft = from_internal_rows(&config, &format!("blk.{layer}.{}.weight", target.gguf_name()), b_peft, true);
        tensors.push((format!("{prefix}.lora_A.weight"), vec![r, d_in], a_peft));
        tensors.push((format!("{prefix}.lora_B.weight"), vec![d_out, r], b_peft));
    }
    let mut files = vec![write_safetensors(&dir.join("adapter_model.safetensors"), &tensors)?];
    let adapter_config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_name,
        "r": r,
        "lora_alpha": lora.alpha,
        "lora_dropout": 0.0,
        "target_modules": modules.into_iter().collect::<Vec<_>>(),
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
    });
    files.push(write_json(&dir.join("adapter_config.json"), &adapter_config)?);
    Ok(Exported { files, merged: lora.factors.len() })
}

/// `ΔW` rows `[out, in]` in twinflow's layout, by GGUF tensor name.
fn deltas(config: &LlamaConfig, lora: Option<&LoraWeights>) -> Result<BTreeMap<String, Vec<f32>>> {
    let Some(lora) = lora else { return Ok(BTreeMap::new()) };
    let mut out = BTreeMap::new();
    for ((layer, target), (a, b)) in &lora.factors {
        let (d_in, d_out) = target.dims(config);
        if *layer >= config.num_layers || a.len() != d_in * lora.rank || b.len() != lora.rank * d_out {
            return Err(Error::Inference(format!(
                "the LoRA factors of layer {layer} {target:?} do not fit this model"
            )));
        }
        out.insert(format!("blk.{layer}.{}.weight", target.gguf_name()), lora.delta_rows(a, b, d_in, d_out));
    }
    Ok(out)
}

/// Whether GGUF keeps the halves order of Q and K for this architecture.
fn gguf_halves(config: &LlamaConfig) -> bool {
    config.architecture.rotates_halves()
}

/// `values` (rows `[out, ..]` of the tensor `tensor` in twinflow's layout)
/// in the halves order when `halves` and the tensor is Q or K.
fn from_internal_rows(config: &LlamaConfig, tensor: &str, values: Vec<f32>, halves: bool) -> Vec<f32> {
    let rotated = [".attn_q.", ".attn_k."].iter().any(|n| tensor.contains(n));
    if !halves || !rotated {
        return values;
    }
    let d = config.head_dim;
    let heads = if tensor.contains(".attn_q.") { config.num_heads } else { config.num_kv_heads };
    let cols = values.len() / (heads * d);
    unpermute_head(&values, d, cols)
}

/// Inverse of [`Weights`]' reordering, per head of `d` rows of `cols`:
/// row `2i` goes back to `i`, row `2i + 1` to `i + d/2`.
fn unpermute_head(values: &[f32], d: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; values.len()];
    for (from, to) in values.chunks_exact(d * cols).zip(out.chunks_exact_mut(d * cols)) {
        for i in 0..d / 2 {
            to[i * cols..(i + 1) * cols].copy_from_slice(&from[2 * i * cols..(2 * i + 1) * cols]);
            to[(i + d / 2) * cols..(i + d / 2 + 1) * cols]
                .copy_from_slice(&from[(2 * i + 1) * cols..(2 * i + 2) * cols]);
        }
    }
    out
}

/// The Hugging Face module of an adapted projection.
fn hf_module(target: LoraTarget) -> &'static str {
    match target {
        LoraTarget::Q => "q_proj",
        LoraTarget::K => "k_proj",
        LoraTarget::V => "v_proj",
        LoraTarget::O => "o_proj",
    }
}

fn write_safetensors(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<std::path::PathBuf> {
    let bad = |e: safetensors::SafeTensorError| Error::Weights { path: path.to_owned(), reason: e.to_string() };
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(bad)?;
    let metadata = std::collections::HashMap::from([("format".to_owned(), "pt".to_owned())]);
    let out = safetensors::serialize(views, Some(metadata)).map_err(bad)?;
    twinflow_schemas::fs::write_atomic(path, &out).map_err(|e| Error::io(path, e))?;
    Ok(path.to_owned())
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<std::path::PathBuf> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Inference(e.to_string()))?;
    twinflow_schemas::fs::write_atomic(path, text.as_bytes()).map_err(|e| Error::io(path, e))?;
    Ok(path.to_owned())
}
