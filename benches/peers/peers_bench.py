"""The driver of `twinflow-bench peers`: the same work, measured the same way,
for every system (twinflow and its peers), one system at a time.

  python3 peers_bench.py --workload DIR --system NAME --python PY --worker FILE
                         --model DIR [--threads 2] [--chunk-chars 1500]
                         [--clients 16] [--seconds 10] [--timeout 300] [-- worker args]

DIR (written by `twinflow-bench peers`) holds `corpus/` (the initial text
files, one document each), `rounds.json` (the changes of each round, with
the exact queries that check them) and `queries.json` (for the load). The
driver copies the corpus into a scratch directory the system watches or
reads, then:

1. initial build: `start` over the directory; wall time;
2. rounds: writes one round's changes into the directory (edits, deletes,
   additions) and tells the system (`sync`: batch systems run here), then
   polls the round's checks until each passes: the time from the write to
   a check's pass is that change's freshness; texts re-embedded and CPU
   seconds per round from `stats`;
3. correctness: after the last round, every check of every round again
   (deleted text not retrievable, edited text retrievable only in its new
   form, added text retrievable);
4. query latency: `load` with `--clients` clients;
5. restart: `stop`, a new worker over the same state (`start`, fresh:
   false), the time until a check answers right again, and the texts
   re-embedded on the way.

Prints one JSON report on stdout. Uses the standard library only.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time


class Worker:
    """One worker process of a system, spoken to in JSON lines."""

    def __init__(self, command, env=None):
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, bufsize=1
        )

    def call(self, cmd, **args):
        self.process.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker exited during {cmd} (status {self.process.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{cmd}: {reply['error']}")
        return reply

    def stop(self):
        try:
            self.call("stop")
        finally:
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, round((len(values) - 1) * p))]


def normal(text):
    return " ".join(text.split())


def passes(worker, check, k):
    """Whether the system answers `check` as the directory now says: a search
    for its sentence, restricted to its document, finds the sentence
    (`present`) or does not (`absent`)."""
    hits = worker.call("search", q=check["query"], k=k, doc=check["doc"])["hits"]
    # A splitter may cut the sentence between two chunks: either half is enough.
    words = check["text"].split()
    halves = [" ".join(words[:6]), " ".join(words[-6:])]
    found = any(h["doc"] == check["doc"] and any(half in normal(h["text"]) for half in halves) for h in hits)
    return found if check["expect"] == "present" else not found


def apply(directory, changes):
    for change in changes:
        path = os.path.join(directory, change["doc"] + ".txt")
        if change["op"] == "delete":
            os.remove(path)
        else:
            # Written beside and renamed: a watcher never reads half a file.
            scratch = os.path.join(directory, "." + change["doc"] + ".tmp")
            with open(scratch, "w") as f:
                f.write(change["text"])
            os.replace(scratch, path)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workload", required=True)
    parser.add_argument("--system", required=True)
    parser.add_argument("--python", required=True)
    parser.add_argument("--worker", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-chars", type=int, default=1500)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--k", type=int, default=10)
    # Checks search with the sentence within its document (each system's
    # metadata filter), deep enough for every chunk of a long one: they
    # measure what the index holds, not how a system ranks.
    parser.add_argument("--check-k", type=int, default=100)
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]

    with open(os.path.join(args.workload, "rounds.json")) as f:
        rounds = json.load(f)
    with open(os.path.join(args.workload, "queries.json")) as f:
        queries = json.load(f)
    scratch = tempfile.mkdtemp(prefix=f"peers-{args.system}-")
    directory = os.path.join(scratch, "docs")
    state = os.path.join(scratch, "state")
    os.makedirs(state)
    shutil.copytree(os.path.join(args.workload, "corpus"), directory)
    command = [
        args.python, args.worker, "--dir", directory, "--state", state, "--model", args.model,
        "--threads", str(args.threads), "--chunk-chars", str(args.chunk_chars), *extra,
    ]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(args.worker)))
    report = {"system": args.system, "documents": len(os.listdir(directory))}
    worker = Worker(command, env)
    try:
        # 1. Initial build.
        started = time.monotonic()
        built = worker.call("start", fresh=True)
        report["build_s"] = time.monotonic() - started
        report["chunks"] = built.get("chunks")
        stats = worker.call("stats")
        report["build_embedded"] = stats["embedded"]
        report["build_cpu_s"] = stats["cpu_s"]
        report["build_rss_peak_mb"] = stats["rss_peak_mb"]
        print(f"{args.system}: built in {report['build_s']:.1f} s", file=sys.stderr, flush=True)

        # 2. Rounds of edits, deletes and additions.
        freshness, per_round, failed, unverifiable = [], [], [], 0
        for number, round_ in enumerate(rounds):
            # A check that text is gone means something only if it was found before.
            absent = [c for c in round_["checks"] if c["expect"] == "absent"]
            unseen = [c for c in absent if passes(worker, c, args.check_k)]
            unverifiable += len(unseen)
            before = worker.call("stats")
            written = time.monotonic()
            apply(directory, round_["changes"])
            synced = worker.call("sync")
            if "unsupported" in synced:
                report["edits"] = synced["unsupported"]
                break
            pending = [c for c in round_["checks"] if c not in unseen]
            times = []
            while pending and time.monotonic() - written < args.timeout:
                still = []
                for check in pending:
                    if passes(worker, check, args.check_k):
                        times.append(time.monotonic() - written)
                    else:
                        still.append(check)
                pending = still
                if pending:
                    time.sleep(0.05)
            after = worker.call("stats")
            freshness.extend(times)
            failed.extend(pending)
            per_round.append({
                "round": number,
                "all_visible_s": max(times) if not pending and times else None,
                "checks": len(round_["checks"]),
                "timed_out": len(pending),
                "embedded": after["embedded"] - before["embedded"],
                "cpu_s": after["cpu_s"] - before["cpu_s"],
            })
            print(f"{args.system}: round {number}: {per_round[-1]}", file=sys.stderr, flush=True)
        report["rounds"] = per_round
        report["freshness_p50_s"] = percentile(freshness, 0.5)
        report["freshness_p99_s"] = percentile(freshness, 0.99)
        report["checks_timed_out"] = len(failed)
        report["absent_checks_not_found_before"] = unverifiable
        if per_round:
            report["embedded_per_round"] = sum(r["embedded"] for r in per_round) / len(per_round)
            report["cpu_s_per_round"] = sum(r["cpu_s"] for r in per_round) / len(per_round)

        # 3. Correctness after every round.
        checks = [c for r in rounds for c in r["checks"]]
        wrong = [c for c in checks if not passes(worker, c, args.check_k)]
        report["final_checks"] = len(checks)
        report["final_wrong"] = {
            kind: sum(1 for c in wrong if c["kind"] == kind) for kind in ("deleted", "old", "edited", "added")
        }

        # 4. Query latency under concurrent clients.
        load = worker.call("load", queries=queries, clients=args.clients, seconds=args.seconds, k=args.k)
        report["load"] = load
        stats = worker.call("stats")
        report["rss_peak_mb"] = stats["rss_peak_mb"]
        report["cpu_s"] = stats["cpu_s"]

        # 5. Restart after a clean stop.
        worker.stop()
        worker = Worker(command, env)
        started = time.monotonic()
        reopened = worker.call("start", fresh=False)
        probe = checks[: min(len(checks), 5)]
        while probe and not all(passes(worker, c, args.check_k) for c in probe):
            if time.monotonic() - started > args.timeout:
                report["restart_wrong"] = True
                break
            time.sleep(0.05)
        report["restart_s"] = time.monotonic() - started
        report["restart_chunks"] = reopened.get("chunks")
        report["restart_embedded"] = worker.call("stats")["embedded"]
    except Exception as e:  # the report says how far the system got
        report["error"] = str(e)
        print(f"{args.system}: {e}", file=sys.stderr, flush=True)
    finally:
        try:
            worker.stop()
        except Exception:
            worker.process.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
