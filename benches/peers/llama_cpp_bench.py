"""llama.cpp (llama-cpp-python) on the prompts of twinflow's generate bench.

Input: --prompts, a JSON object {name: [token ids]} written by the Rust bench
(twinflow's tokenizer and chat template), so both runtimes process the same
tokens. Per prompt and run: the prompt is evaluated in one call (prefill),
then --tokens tokens are decoded greedily one at a time (argmax of the last
logits; end-of-text does not stop it, so every run decodes the same count).
Output: one JSON line {"peer", "version", "threads", "rows": [...]}, each row
{prompt, run, prompt_tokens, prefill_ms, prefill_tok_s, decode_ms,
decode_tok_s, first_tokens}; decode rates count the tokens after the first,
as twinflow's do.
"""

import argparse
import importlib.metadata
import json
import time

import numpy as np
from llama_cpp import Llama


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", required=True)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with open(args.prompts) as f:
        prompts = json.load(f)
    longest = max(len(ids) for ids in prompts.values())
    llm = Llama(
        model_path=args.model,
        n_ctx=max(2048, longest + args.tokens + 8),
        n_batch=512,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    vocab = llm.n_vocab()

    def argmax_last():
        # The logits of the last token evaluated (the only ones computed: logits_all is off).
        return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,))))

    rows = []
    for name, ids in prompts.items():
        for run in range(args.runs):
            llm.reset()
            started = time.perf_counter()
            llm.eval(ids)
            prefill = time.perf_counter() - started
            token = argmax_last()
            out = [token]
            started = time.perf_counter()
            for _ in range(args.tokens - 1):
                llm.eval([token])
                token = argmax_last()
                out.append(token)
            decode = time.perf_counter() - started
            rows.append(
                {
                    "prompt": name,
                    "run": run,
                    "prompt_tokens": len(ids),
                    "prefill_ms": prefill * 1e3,
                    "prefill_tok_s": len(ids) / prefill,
                    "decode_ms": decode * 1e3,
                    "decode_tok_s": (args.tokens - 1) / decode,
                    "first_tokens": out[:16],
                }
            )
    print(
        json.dumps(
            {
                "peer": "llama-cpp-python",
                "version": importlib.metadata.version("llama_cpp_python"),
                "threads": args.threads,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
