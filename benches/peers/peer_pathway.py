"""The Pathway 0.33.0 peer of `twinflow-bench peers` (protocol: peer_common.py).

The worker (this file, run plainly) starts a child process (this file again,
with --serve-port) running a streaming Pathway pipeline behind Pathway's own
REST server on a free loopback port; the worker talks to it with urllib:

  pw.io.fs.read(DIR/*.txt, format="binary", mode="streaming", with_metadata=True)
  -> xpacks.llm.document_store.DocumentStore (default Utf8Parser, CharSplitter)
  -> BruteForceKnnFactory (cosine) with SentenceTransformerEmbedder(--model, cpu)
  -> DocumentStoreServer: /v1/retrieve, /v1/statistics, /v1/inputs, plus our
     /v1/progress (files and chunks out of the embedder, for start's wait).
Edits and deletes flow through the streaming connector, so `sync` does nothing.
The child rewrites a small JSON file (--status-file) after each embedder call:
doc_embedded (chunk texts) and query_embedded (queries, counted apart: the index
embeds its queries with a second embedder object sharing the model).

Restart: pw.persistence.Config(Backend.filesystem(--state/pw_persist)),
PERSISTING mode, the only one free of a license key here (OPERATOR_PERSISTING,
which keeps operator state, demands PATHWAY_LICENSE_KEY). PERSISTING keeps a
snapshot of the input and, on restart, replays it through the whole pipeline:
files are not re-read, but every chunk is parsed, split and embedded again. The
document embedder carries Pathway's DiskCache, whose key is a whole UDF batch:
a restart with no edits since the first build replays the same batches and
embeds nothing; once edits or deletes entered the history, the replay comes
in other batches and stats show every live chunk re-embedded.
"""

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import peer_common as pc  # noqa: E402


# --------------------------------------------------------------- the child --

def serve_pathway(args):
    pc.limit_threads(args.threads)
    import numpy as np
    import pathway as pw
    from pathway.stdlib.indexing.nearest_neighbors import BruteForceKnnFactory
    from pathway.xpacks.llm.document_store import DocumentStore
    from pathway.xpacks.llm.embedders import SentenceTransformerEmbedder
    from pathway.xpacks.llm.servers import DocumentStoreServer
    from pathway.xpacks.llm.splitters import BaseSplitter

    counts = {"doc_embedded": 0, "query_embedded": 0}
    lock = threading.Lock()

    def write_status():
        with lock:
            tmp = args.status_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(counts, f)
            os.replace(tmp, args.status_file)

    class CountingEmbedder(SentenceTransformerEmbedder):
        """SentenceTransformerEmbedder that counts the texts it encodes under `key`."""

        key = "doc_embedded"

        def __wrapped__(self, input: list[str], **kwargs) -> list[np.ndarray]:
            out = super().__wrapped__(input, **kwargs)
            with lock:
                counts[self.key] += len(input)
            write_status()
            return out

        def get_embedding_dimension(self, **kwargs):  # no probe encode to count
            return len(self.model.encode(["."])[0])

    # Pathway hands the UDF up to 1024 texts a call (its default batch_size);
    # encode() runs them 32 at a time (sentence-transformers' own default, as the
    # other peers do): Pathway's default passes 1024 to encode too, which took
    # 5.6 GB RSS on 1000 chunks of ~1500 chars.
    doc_embedder = CountingEmbedder(model=args.model, device="cpu",
                                    call_kwargs={"batch_size": 32})
    # Pathway's on-disk UDF cache (under the persistence root; this constructor,
    # unlike OpenAIEmbedder's, takes no cache_strategy, so it is set afterwards).
    # Its key is the whole batch of texts: it only helps when a restart replays
    # exactly the batches of the first run (see the module docstring).
    doc_embedder.cache_strategy = pw.udfs.DiskCache()
    doc_embedder.func = doc_embedder._wrap_function()
    # The query side: the same model object, counted apart, not cached.
    query_embedder = CountingEmbedder.__new__(CountingEmbedder)
    query_embedder.__dict__.update(doc_embedder.__dict__)
    query_embedder.key = "query_embedded"
    query_embedder.cache_strategy = None
    query_embedder.func = query_embedder._wrap_function()  # bound to this object

    class CharSplitter(BaseSplitter):
        """Chunks of at most --chunk-chars characters, cut at the last paragraph
        break, line break, sentence end or space in the window (Pathway's own
        TokenCountSplitter needs tiktoken, which this venv lacks; characters
        also match what the other peers are given)."""

        def chunk(self, text, metadata={}, **kwargs):
            size, out, start = args.chunk_chars, [], 0
            while start < len(text):
                end = min(len(text), start + size)
                if end < len(text):
                    for sep in ("\n\n", "\n", ". ", " "):
                        cut = text.rfind(sep, start + size // 2, end)
                        if cut > start:
                            end = cut + len(sep)
                            break
                piece = text[start:end].strip()
                if piece:
                    out.append((piece, metadata))
                start = end
            return out

    class SplitKnnFactory(BruteForceKnnFactory):
        """Brute-force cosine KNN whose data and queries use different embedders."""

        def build_inner_index(self, data_column, metadata_column=None):
            inner = super().build_inner_index(data_column, metadata_column)
            object.__setattr__(inner, "embedder", query_embedder)  # queries only
            return inner

    docs = pw.io.fs.read(
        os.path.join(args.dir, "*.txt"), format="binary", mode="streaming",
        with_metadata=True, name="docs",
        # The default 1500 ms commit also holds every as-of-now query back until
        # the file source's next commit (p50 ~1.5 s); 50 ms matches the REST input.
        autocommit_duration_ms=50,
    )
    store = DocumentStore(
        docs,
        retriever_factory=SplitKnnFactory(embedder=doc_embedder),
        splitter=CharSplitter(),
    )

    # /v1/progress: files and chunks that came out of the embedding step. Being
    # downstream of the embedder (unlike /v1/statistics, which counts parsed
    # files), "files == all files" there means every file is in the index; and,
    # unlike a subscribe sink, it is recomputed when persistence replays input.
    embedded = store.index.inner_index._data_column.table
    per_file = (embedded.select(path=pw.this.metadata["path"].as_str())
                .groupby(pw.this.path).reduce(pw.this.path, n=pw.reducers.count()))
    totals = per_file.reduce(files=pw.reducers.count(), chunks=pw.reducers.sum(pw.this.n))

    def progress_query(queries):
        return queries.join_left(totals, id=queries.id).select(result=pw.apply_with_type(
            lambda f, c: pw.Json({"files": f or 0, "chunks": c or 0}), pw.Json,
            pw.right.files, pw.right.chunks))

    # Pathway 0.33 snapshots REST requests as input data: a restarted pipeline
    # would replay and re-embed every old query. Mark the REST source the way
    # Pathway marks its own internal sources, so queries are not persisted.
    from pathway.io.http import _server
    _server.RestServerSubject._is_internal = lambda self: True
    server = DocumentStoreServer("127.0.0.1", args.serve_port, store)
    # Registered by hand (not server.serve) so answered polls are deleted: a kept
    # query row would be re-joined with `totals` at every change of the index.
    queries, writer = pw.io.http.rest_connector(
        webserver=server.webserver, route="/v1/progress", methods=("GET", "POST"),
        schema=DocumentStore.StatisticsQuerySchema, autocommit_duration_ms=50,
        delete_completed_queries=True)
    writer(progress_query(queries))
    write_status()
    # PERSISTING is the mode the free version allows (OPERATOR_PERSISTING fails
    # with "FULL-PERSISTENCE require a Pathway license key").
    persistence = pw.persistence.Config(
        pw.persistence.Backend.filesystem(args.persist_dir),
        persistence_mode=pw.PersistenceMode.PERSISTING,
    )
    # SIGTERM is turned into a graceful shutdown by pw.run (persistence flushed).
    pw.run(monitoring_level=pw.MonitoringLevel.NONE, persistence_config=persistence)


# -------------------------------------------------------------- the worker --

def die_with_parent():
    """In the child, before exec: SIGTERM it when the worker dies (PR_SET_PDEATHSIG)."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


class Worker:
    def __init__(self, args):
        self.args = args
        self.child = None
        os.makedirs(args.state, exist_ok=True)
        self.persist = os.path.join(args.state, "pw_persist")
        self.status_file = os.path.join(args.state, "pw_status.json")

    def _post(self, route, body, timeout=120):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{route}", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def _status(self):
        try:
            with open(self.status_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def start(self, fresh):
        self.stop()  # at most one pipeline at a time
        if fresh:
            subprocess.run(["rm", "-rf", self.persist], check=True)
        if os.path.exists(self.status_file):
            os.remove(self.status_file)
        with socket.socket() as s:  # a free loopback port
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        a = self.args
        self.child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--dir", a.dir, "--state", a.state,
             "--model", a.model, "--threads", str(a.threads), "--chunk-chars", str(a.chunk_chars),
             "--serve-port", str(self.port), "--status-file", self.status_file,
             "--persist-dir", self.persist],
            stdout=sys.stderr, stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        n_files = len(glob.glob(os.path.join(a.dir, "*.txt")))
        # Ready when /v1/progress (downstream of the embedder) counts every file
        # twice in a row, then /v1/statistics (parsed files) agrees and a retrieve
        # answers. /v1/statistics is not polled: DocumentStoreServer keeps its
        # queries, and each kept one is recomputed whenever the file set changes.
        stable = 0
        while True:
            if self.child.poll() is not None:
                raise RuntimeError(f"pathway child exited with {self.child.returncode}")
            time.sleep(0.25)
            try:
                progress = self._post("/v1/progress", {}, timeout=30)
            except OSError:
                continue  # server not up yet
            stable = stable + 1 if progress["files"] == n_files else 0
            if (stable >= 2
                    and self._post("/v1/statistics", {})["file_count"] == n_files
                    and (n_files == 0 or self.search("ready?", 1)["hits"])):
                return {"chunks": progress["chunks"]}

    def sync(self):
        return {}  # the streaming connector sees every change by itself

    def search(self, q, k, doc=None):
        body = {"query": q, "k": k}
        if doc is not None:
            # The document store's metadata filter (JMESPath over the file's metadata;
            # Pathway writes string literals between backticks).
            body["metadata_filter"] = f"contains(path, `/{doc}.txt`)"
        result = self._post("/v1/retrieve", body)
        return {"hits": [{"doc": pc.doc_of(r["metadata"]["path"]), "text": r["text"]}
                         for r in result]}

    def load(self, queries, clients, seconds, k):
        """`clients` threads POSTing /v1/retrieve (one connection per request)."""
        report = pc.in_process_load(
            lambda q, k: self._post("/v1/retrieve", {"query": q, "k": k}), queries, clients, seconds, k)
        report["via"] = "http"
        return report

    def stats(self):
        rss, cpu = pc.process_usage(self.child.pid)
        s = self._status()
        return {"embedded": s.get("doc_embedded", 0), "query_embedded": s.get("query_embedded", 0),
                "rss_peak_mb": rss, "cpu_s": cpu}

    def stop(self):
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)  # pw.run shuts down gracefully
            try:
                self.child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.child.kill()
                self.child.wait()
        self.child = None
        return {}


if __name__ == "__main__":
    ARGS = pc.parse_args(extra=("--serve-port", "--status-file", "--persist-dir"))
    if ARGS.serve_port:
        ARGS.serve_port = int(ARGS.serve_port)
        serve_pathway(ARGS)
    else:
        pc.serve(Worker(ARGS))
