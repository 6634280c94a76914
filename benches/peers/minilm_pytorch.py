"""Peer for `twinflow-bench embed`: sentence-transformers (PyTorch, CPU) on the same texts.

Reads one text per line from --texts, encodes them with the all-MiniLM-L6-v2
weights in --model-dir (offline, no hub access), and prints one JSON object:
sentences/s and tokens/s over the timed pass (after one warm-up batch).
"""

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--texts", required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vectors-out", help="write the first 8 vectors here, for a parity check")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    with open(args.texts, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f]

    model = SentenceTransformer(args.model_dir, device="cpu")
    tokens = sum(len(ids) for ids in model.tokenizer(texts, truncation=True, max_length=model.max_seq_length)["input_ids"])
    model.encode(texts[: args.batch], batch_size=args.batch)  # warm-up

    started = time.perf_counter()
    vectors = model.encode(texts, batch_size=args.batch, convert_to_numpy=True, normalize_embeddings=True)
    seconds = time.perf_counter() - started

    if args.vectors_out:
        with open(args.vectors_out, "w", encoding="utf-8") as f:
            json.dump(vectors[:8].tolist(), f)
    print(json.dumps({
        "peer": "sentence-transformers",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "texts": len(texts),
        "tokens": tokens,
        "seconds": seconds,
        "sentences_per_s": len(texts) / seconds,
        "tokens_per_s": tokens / seconds,
    }))


if __name__ == "__main__":
    main()
