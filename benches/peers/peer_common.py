"""What every peer worker of `twinflow-bench peers` shares: the protocol loop,
the resource figures and the in-process query load.

A worker is one system (twinflow, Pathway, CocoIndex, LlamaIndex, the book's
batch stack) kept over one directory of text files. `peers_bench.py` starts it
in the system's own venv and speaks JSON lines over its stdin/stdout (logs go
to stderr):

  {"cmd": "start", "fresh": true}   build over the directory (fresh) or reopen what
                                    a previous worker left in --state (fresh: false);
                                    returns when the system says every file is searchable:
                                    {"chunks": n} (n: chunks or rows it holds, or null)
  {"cmd": "sync"}                   bring the index up to the directory's state when
                                    the system must be told (batch systems run here);
                                    streaming systems return at once: {}
  {"cmd": "search", "q": s, "k": 10, "doc": stem or null}
                                    {"hits": [{"doc": file stem, "text": chunk text}, ...]};
                                    with "doc", only that document's chunks (the
                                    system's metadata filter)
  {"cmd": "load", "queries": [...], "clients": 16, "seconds": 10, "k": 10}
                                    {"via": "http" | "in-process", "p50_ms", "p99_ms", "qps", "queries"}
  {"cmd": "stats"}                  {"embedded": texts encoded since this worker started,
                                     "rss_peak_mb": peak resident memory of the system,
                                     "cpu_s": CPU seconds of the system so far}
  {"cmd": "stop"}                   a clean stop (state kept in --state); {} and exit

A failure answers {"error": "..."}; something the system cannot do answers
{"unsupported": "why"}. Every worker takes
  --dir DIR --state DIR --model DIR --threads N --chunk-chars N
(the model directory holds all-MiniLM-L6-v2 in the sentence-transformers layout).
"""

import json
import os
import resource
import sys
import threading
import time
import traceback


def parse_args(extra=()):
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-chars", type=int, default=1500)
    for name in extra:
        parser.add_argument(name)
    return parser.parse_args()


def limit_threads(threads):
    """The same number of threads for every system's numeric libraries."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = str(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def doc_of(path):
    """The document a file holds: its name without the extension."""
    base = os.path.basename(str(path))
    return base[:-4] if base.endswith(".txt") else base


def self_usage():
    """(peak RSS in MiB, CPU seconds) of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime


def process_usage(pid):
    """(peak RSS in MiB, CPU seconds) of another, running process, from /proc."""
    peak = 0.0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024.0
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    # Fields 14 and 15 (utime, stime), counted from the state at index 0 after the name.
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return peak, cpu


class Counting:
    """Counts the texts a sentence-transformers model encodes."""

    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    def add(self, n):
        with self.lock:
            self.count += n


def load_minilm(model_dir, threads):
    from sentence_transformers import SentenceTransformer

    limit_threads(threads)
    return SentenceTransformer(model_dir, device="cpu")


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round((len(values) - 1) * p))]


def in_process_load(search, queries, clients, seconds, k):
    """`clients` threads calling `search(q, k)` for `seconds`: latency percentiles."""
    latencies = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(offset):
        i = offset
        while time.monotonic() < stop:
            started = time.monotonic()
            search(queries[i % len(queries)], k)
            elapsed = (time.monotonic() - started) * 1e3
            with lock:
                latencies.append(elapsed)
            i += clients

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    return {
        "via": "in-process",
        "p50_ms": percentile(latencies, 0.5),
        "p99_ms": percentile(latencies, 0.99),
        "qps": len(latencies) / wall,
        "queries": len(latencies),
    }


def serve(worker):
    """Answers the driver's commands with `worker`'s methods until `stop`."""
    out = sys.stdout
    # Libraries that print to stdout must not break the protocol.
    sys.stdout = sys.stderr
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        request = json.loads(line)
        cmd = request.pop("cmd")
        try:
            reply = getattr(worker, cmd)(**request)
        except NotImplementedError as e:
            reply = {"unsupported": str(e)}
        except Exception as e:  # reported to the driver, which records it
            traceback.print_exc(file=sys.stderr)
            reply = {"error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply if reply is not None else {}) + "\n")
        out.flush()
        if cmd == "stop":
            break
