"""Peer for twinflow's ANN bench: hnswlib on the same vectors, in the same run.

Dataset directory (written by the Rust bench; all little-endian, row-major):
  meta.json    {"n": N, "d": D, "q": Q}
  base.f32     N x D f32, L2-normalised (metric: inner product = cosine)
  queries.f32  Q x D f32, L2-normalised
  truth.u32    Q x 10 u32, ids (rows of base) of the exact top-10 by inner
               product, best first. Optional: if absent it is computed here by
               brute force with numpy and cached in the directory.

Builds an HNSW index (space='ip', --m, --ef-construction, --threads-build
threads for add_items), then for each --ef searches single-threaded: one
knn_query call per query (per-query latency, as a server would; this includes
the few microseconds of Python call overhead) and one batched knn_query over
all queries. Then marks 10% of the ids deleted and searches again at the middle
ef against the truth recomputed without them. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import time

import numpy as np

TRUTH_K = 10


def vm_rss_bytes() -> int:
    """Resident set size of this process, from /proc/self/status."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError("no VmRSS in /proc/self/status")


def exact_top_k(base: np.ndarray, queries: np.ndarray, k: int, deleted: np.ndarray | None = None) -> np.ndarray:
    """Exact top-k ids by inner product (best first), skipping `deleted` ids; chunked over queries."""
    out = np.empty((len(queries), k), dtype=np.uint32)
    chunk = max(1, (1 << 26) // len(base))  # ~256 MiB of scores at a time
    for s in range(0, len(queries), chunk):
        scores = queries[s : s + chunk] @ base.T
        if deleted is not None:
            scores[:, deleted] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
        out[s : s + chunk] = np.take_along_axis(top, order, axis=1)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k."""
    k = truth.shape[1]
    return float(np.mean([len(np.intersect1d(f, t)) / k for f, t in zip(found, truth)]))


def search_one_by_one(index, queries: np.ndarray, k: int) -> dict:
    """Single-threaded, one knn_query call per query: recall inputs, QPS and latency percentiles."""
    found = np.empty((len(queries), k), dtype=np.uint64)
    lat_ns = np.empty(len(queries), dtype=np.int64)
    started = time.perf_counter()
    for i, v in enumerate(queries):
        t0 = time.perf_counter_ns()
        labels, _ = index.knn_query(v, k=k)
        lat_ns[i] = time.perf_counter_ns() - t0
        found[i] = labels[0]
    seconds = time.perf_counter() - started
    lat_us = lat_ns / 1e3
    return {
        "found": found,
        "qps": len(queries) / seconds,
        "p50_us": float(np.percentile(lat_us, 50)),
        "p99_us": float(np.percentile(lat_us, 99)),
        "mean_us": float(lat_us.mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True, help="dataset directory (format above)")
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=128)
    parser.add_argument("--ef", default="16,32,64,128,256", help="comma-separated search ef values")
    parser.add_argument("--threads-build", type=int, default=2)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    efs = [int(e) for e in args.ef.split(",")]
    k = args.k
    assert 1 <= k <= TRUTH_K, f"--k must be in 1..{TRUTH_K}"

    import hnswlib

    with open(os.path.join(args.data, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    n, d, q = meta["n"], meta["d"], meta["q"]
    base = np.fromfile(os.path.join(args.data, "base.f32"), dtype="<f4").reshape(n, d)
    queries = np.fromfile(os.path.join(args.data, "queries.f32"), dtype="<f4").reshape(q, d)

    truth_path = os.path.join(args.data, "truth.u32")
    truth_source = "file"
    if not os.path.exists(truth_path):
        exact_top_k(base, queries, TRUTH_K).astype("<u4").tofile(truth_path)
        truth_source = "computed"
    truth = np.fromfile(truth_path, dtype="<u4").reshape(q, TRUTH_K)[:, :k]

    # Build. RSS is read just around the index's life so the growth is the index's own.
    rss_before = vm_rss_bytes()
    index = hnswlib.Index(space="ip", dim=d)
    index.init_index(max_elements=n, ef_construction=args.ef_construction, M=args.m)
    index.set_num_threads(args.threads_build)
    started = time.perf_counter()
    index.add_items(base, np.arange(n))
    build_s = time.perf_counter() - started
    rss_growth = vm_rss_bytes() - rss_before

    # Search at each ef, single-threaded.
    index.set_num_threads(1)
    search = []
    for ef in efs:
        index.set_ef(ef)
        search_one_by_one(index, queries[: min(q, 100)], k)  # warm-up
        one = search_one_by_one(index, queries, k)
        started = time.perf_counter()
        batch_found, _ = index.knn_query(queries, k=k)
        batch_s = time.perf_counter() - started
        search.append({
            "ef": ef,
            f"recall_at_{k}": recall(one.pop("found"), truth),
            **one,
            "batch_qps": q / batch_s,
            f"batch_recall_at_{k}": recall(batch_found, truth),
        })

    # Deletes: mark 10% of the ids (a fixed random sample), then search at the middle ef.
    deleted = np.sort(np.random.default_rng(0).choice(n, size=n // 10, replace=False))
    started = time.perf_counter()
    for label in deleted:
        index.mark_deleted(int(label))
    delete_s = time.perf_counter() - started
    truth_live = exact_top_k(base, queries, k, deleted=deleted)
    ef_mid = efs[len(efs) // 2]
    index.set_ef(ef_mid)
    after = search_one_by_one(index, queries, k)
    found = after.pop("found")

    print(json.dumps({
        "peer": "hnswlib",
        "hnswlib": importlib.metadata.version("hnswlib"),
        "numpy": np.__version__,
        "n": n, "d": d, "q": q, "k": k,
        "m": args.m, "ef_construction": args.ef_construction,
        "truth": truth_source,
        "build": {
            "threads": args.threads_build,
            "seconds": build_s,
            "vectors_per_s": n / build_s,
        },
        "memory": {
            "rss_growth_bytes": rss_growth,
            "bytes_per_vector": rss_growth / n,
            "raw_vector_bytes": 4 * d,
            "index_file_bytes": index.index_file_size(),  # what save_index would write
        },
        "search": search,  # threads = 1
        "delete": {
            "deleted": len(deleted),
            "seconds": delete_s,
            "per_s": len(deleted) / delete_s,
            "ef": ef_mid,
            f"recall_at_{k}": recall(found, truth_live),
            **after,
            "deleted_returned": int(np.isin(found, deleted).sum()),  # must be 0
        },
    }))


if __name__ == "__main__":
    main()
