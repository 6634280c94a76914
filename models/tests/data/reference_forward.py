"""A reference forward pass of a decoder (llama, qwen2, qwen3) in NumPy.

Reads a GGUF file with the `gguf` package (llama.cpp's own reader and
dequantisers), or a Hugging Face model directory (config.json and
model.safetensors, read here), runs the tokens through the network in
float64, following each format's conventions (GGUF: adjacent-pair RoPE for
llama, whose converter permutes Q and K for it, halves for the Qwen models;
Hugging Face: halves for all), and writes the logits of every position as
little-endian float32 `[tokens, vocab]`.

usage: reference_forward.py MODEL.gguf|MODEL_DIR '[ids...]' OUT.f32
"""

import json
import os
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def read_safetensors(path):
    data = open(path, "rb").read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    tensors = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", (name, t["dtype"])
        start, end = t["data_offsets"]
        raw = np.frombuffer(data[8 + n + start : 8 + n + end], dtype="<f4")
        tensors[name] = raw.reshape(t["shape"]).astype(np.float64)
    return tensors


HF_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def load_hf(path):
    """A Hugging Face directory as (tensors by GGUF name, hyper-parameters, halves)."""
    config = json.load(open(os.path.join(path, "config.json")))
    w = {}
    for name, value in read_safetensors(os.path.join(path, "model.safetensors")).items():
        if name == "model.embed_tokens.weight":
            w["token_embd.weight"] = value
        elif name == "model.norm.weight":
            w["output_norm.weight"] = value
        elif name == "lm_head.weight":
            w["output.weight"] = value
        else:
            _, _, layer, rest = name.split(".", 3)
            module, kind = rest.rsplit(".", 1)
            w[f"blk.{layer}.{HF_NAMES[module]}.{kind}"] = value
    scaling = config.get("rope_scaling") or {}
    hp = {
        "embedding_length": config["hidden_size"],
        "attention.head_count": config["num_attention_heads"],
        "attention.head_count_kv": config["num_key_value_heads"],
        "attention.key_length": config["head_dim"],
        "attention.layer_norm_rms_epsilon": config["rms_norm_eps"],
        "rope.freq_base": config["rope_theta"],
        "block_count": config["num_hidden_layers"],
        "rope.scaling.type": scaling.get("type"),
        "rope.scaling.factor": scaling.get("factor"),
    }
    return w, hp, True


def load_gguf(path):
    """A GGUF file as (tensors by name, hyper-parameters, halves)."""
    reader = GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    prefix = f"{arch}."
    hp = {k[len(prefix) :]: f.contents() for k, f in reader.fields.items() if k.startswith(prefix)}
    w = {}
    for t in reader.tensors:
        shape = [int(n) for n in reversed(t.shape)]
        w[t.name] = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(shape)
    return w, hp, arch in ("qwen2", "qwen3")


def main(path, ids, out):
    w, params, halves = load_hf(path) if os.path.isdir(path) else load_gguf(path)

    def hp(key, default=None):
        value = params.get(key)
        return default if value is None else value

    hidden, heads = hp("embedding_length"), hp("attention.head_count")
    kv_heads = hp("attention.head_count_kv", heads)
    d = hp("attention.key_length", hidden // heads)
    eps = hp("attention.layer_norm_rms_epsilon")
    freqs = hp("rope.freq_base", 10000.0) ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    if "rope_freqs.weight" in w:
        freqs = freqs / w["rope_freqs.weight"]
    if hp("rope.scaling.type") == "linear":
        freqs = freqs / hp("rope.scaling.factor")

    def norm(x, gain):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * gain

    def rope(x, positions):  # x [T, heads, d]
        angle = positions[:, None] * freqs[None, :]
        cos, sin = np.cos(angle)[:, None, :], np.sin(angle)[:, None, :]
        if halves:
            a, b = x[..., : d // 2], x[..., d // 2 :]
            return np.concatenate([a * cos - b * sin, a * sin + b * cos], -1)
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    T = len(ids)
    positions = np.arange(T, dtype=np.float64)
    x = w["token_embd.weight"][ids]
    for i in range(hp("block_count")):
        p = f"blk.{i}."
        y = norm(x, w[p + "attn_norm.weight"])
        q, k, v = (y @ w[p + f"attn_{n}.weight"].T + w.get(p + f"attn_{n}.bias", 0.0) for n in "qkv")
        q, k, v = q.reshape(T, heads, d), k.reshape(T, kv_heads, d), v.reshape(T, kv_heads, d)
        if p + "attn_q_norm.weight" in w:
            q, k = norm(q, w[p + "attn_q_norm.weight"]), norm(k, w[p + "attn_k_norm.weight"])
        q, k = rope(q, positions), rope(k, positions)
        k, v = np.repeat(k, heads // kv_heads, axis=1), np.repeat(v, heads // kv_heads, axis=1)
        scores = np.einsum("tnd,snd->nts", q, k) / np.sqrt(d)
        scores[:, np.triu(np.ones((T, T), dtype=bool), 1)] = -np.inf
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        scores /= scores.sum(-1, keepdims=True)
        context = np.einsum("nts,snd->tnd", scores, v).reshape(T, heads * d)
        x = x + context @ w[p + "attn_output.weight"].T
        y = norm(x, w[p + "ffn_norm.weight"])
        gate, up = y @ w[p + "ffn_gate.weight"].T, y @ w[p + "ffn_up.weight"].T
        x = x + (gate / (1.0 + np.exp(-gate)) * up) @ w[p + "ffn_down.weight"].T
    x = norm(x, w["output_norm.weight"])
    logits = x @ w.get("output.weight", w["token_embd.weight"]).T
    logits.astype("<f4").tofile(out)


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3])
