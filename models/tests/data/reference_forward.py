"""A reference forward pass of a GGUF decoder (llama, qwen2, qwen3) in NumPy.

Reads the file with the `gguf` package (llama.cpp's own reader and
dequantisers), runs the tokens through the network in float64, following
llama.cpp's conventions (adjacent-pair RoPE for llama, whose converter
permutes Q and K for it; halves for the Qwen models), and writes the logits of
every position as little-endian float32 `[tokens, vocab]`.

usage: reference_forward.py MODEL.gguf '[ids...]' OUT.f32
"""

import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize


def main(path, ids, out):
    reader = GGUFReader(path)

    def meta(key, default=None):
        field = reader.fields.get(key)
        return default if field is None else field.contents()

    arch = meta("general.architecture")

    def hp(key, default=None):
        return meta(f"{arch}.{key}", default)

    w = {}
    for t in reader.tensors:
        shape = [int(n) for n in reversed(t.shape)]
        w[t.name] = dequantize(t.data, t.tensor_type).astype(np.float64).reshape(shape)

    hidden, heads = hp("embedding_length"), hp("attention.head_count")
    kv_heads = hp("attention.head_count_kv", heads)
    d = hp("attention.key_length", hidden // heads)
    eps = hp("attention.layer_norm_rms_epsilon")
    freqs = hp("rope.freq_base", 10000.0) ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    if "rope_freqs.weight" in w:
        freqs = freqs / w["rope_freqs.weight"]
    if hp("rope.scaling.type") == "linear":
        freqs = freqs / hp("rope.scaling.factor")
    halves = arch in ("qwen2", "qwen3")

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
