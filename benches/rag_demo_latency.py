"""/v1/rag latency per step on the demo corpus.

Starts `twinflow up --demo` in a fresh directory (drift and retraining off, so
no retrain shares the cores), waits until all 233 speeches are searchable,
asks 20 questions one at a time and prints each answer's time, then the
median of every step. Prints the JSON rows to rag.json in that directory.

    python3 benches/rag_demo_latency.py [DIR]     (default: a new temporary directory)

The binary is $TWINFLOW_BIN, else $CARGO_TARGET_DIR/debug/twinflow (build it first).
"""
import json, os, subprocess, sys, tempfile, time, urllib.request, statistics
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target"))
bin_ = os.environ.get("TWINFLOW_BIN", os.path.join(target, "debug", "twinflow"))
workdir = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="twinflow-rag-")
os.makedirs(workdir, exist_ok=True)
os.chdir(workdir)
env = dict(os.environ, TWINFLOW__TRAINING__ON_DRIFT="false", TWINFLOW__DRIFT__ENABLED="false")
log = open("server.log", "w")
p = subprocess.Popen([bin_, "up", "--demo"], stdout=log, stderr=log, env=env)
try:
    key = None
    for _ in range(120):
        time.sleep(2)
        if os.path.exists("twinflow-data/_auth/admin.key"):
            key = open("twinflow-data/_auth/admin.key").read().strip(); break
    def call(path, body=None):
        req = urllib.request.Request("http://127.0.0.1:8080" + path, data=None if body is None else json.dumps(body).encode(),
                                     headers={"authorization": "Bearer " + key, "content-type": "application/json"})
        return json.load(urllib.request.urlopen(req, timeout=600))
    start = time.time()
    while True:
        time.sleep(5)
        try:
            st = call("/v1/status")
        except Exception as e:
            continue
        count = st.get("tables", {}).get("documents", 0)
        if count >= 233 and st.get("pending_changes", 1) == 0 and st.get("texts_waiting", 1) == 0:
            break
        if time.time() - start > 1200: sys.exit("not loaded")
    print("loaded in", round(time.time() - start), "s", flush=True)
    qs = ["What did the president say about the national debt?", "How should tariffs protect industry?",
          "What did Lincoln say about emancipation?", "Why is education important for the nation?",
          "What is the state of the union?", "What did Roosevelt say about the New Deal?",
          "How did presidents describe the railroads?", "What was said about the war with Mexico?",
          "What did the president propose for veterans?", "How should the nation deal with immigration?",
          "What did Kennedy say about space exploration?", "What was said about the Great Depression?",
          "How did the president describe relations with Great Britain?", "What did Reagan say about taxes?",
          "What was proposed for health care?", "What did the president say about the Indian tribes?",
          "How should the currency and banks be regulated?", "What did Washington say about the militia?",
          "What was said about civil rights?", "What did the president say about terrorism?"]
    rows = []
    for q in qs:
        t = time.time()
        r = call("/v1/rag", {"query": q})
        wall = time.time() - t
        rows.append({"q": q, "wall_s": wall, **r["timings"], "tokens": r.get("usage"), "cited": sum(1 for c in r["citations"] if c.get("cited"))})
        print(q, round(wall, 2), r["timings"]["total_ms"], flush=True)
    json.dump(rows, open("rag.json", "w"), indent=1)
    med = lambda k: statistics.median(r[k] for r in rows)
    print("median total_ms", med("total_ms"), "wall", med("wall_s"), {k: med(k) for k in ["retrieval_ms", "rerank_ms", "prompt_ms", "prefill_ms", "generation_ms", "grounding_ms"]})
    tot = sorted(r["total_ms"] for r in rows); print("p90", tot[int(0.9 * len(tot)) - 1])
finally:
    p.terminate(); p.wait()
