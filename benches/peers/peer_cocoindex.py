"""CocoIndex 1.0.26 as a worker of `peers_bench.py`: CocoIndex's usual text
embedding app (local files -> RecursiveSplitter -> all-MiniLM-L6-v2 -> LanceDB),
run in this process and brought up to date by one incremental update per `sync`.

  peer_cocoindex.py --dir DIR --state DIR --model DIR --threads N --chunk-chars N

Needs, in its venv: cocoindex==1.0.26, lancedb==0.40.0, pyarrow==26.0.1 (and
torch + sentence-transformers, here visible through a .pth file).

CocoIndex v1 is a rewrite of 0.x: no PostgreSQL. Its own state (which file and
which chunk produced which row, and memoised function results) lives in an
LMDB database at `COCOINDEX_DB`, here `--state/coco_db`, so no server runs
beside this process. The target is CocoIndex's LanceDB connector: a table on
disk in `--state/lancedb`, written by CocoIndex's reconciliation (upserts and
deletes of rows) and read here with LanceDB's own exact (flat, no ANN index)
cosine top-k search. Both survive a stop, so `start(fresh=False)` reopens them
and runs one update, which should find every file unchanged.

`sync` runs `App.update()` once (CocoIndex's one-shot catch-up, as
`cocoindex update` does), rather than the live mode (`update(live=True)`, a
file watcher): the benchmark tells batch-updated systems when to catch up.

`stats()["embedded"]` counts the chunk texts given to the model for indexing
(queries are not counted); `rss_peak_mb` and `cpu_s` are this process's, the
whole system. `--threads` bounds torch (the embedding); CocoIndex's Rust engine
and LanceDB keep their own small thread pools for I/O and bookkeeping.
"""

import asyncio
import os
import pathlib
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Annotated, AsyncIterator

# Read by the engine when it loads: no call home (the network is not reachable).
os.environ.setdefault("COCOINDEX_DISABLE_USAGE_TRACKING", "1")

import lancedb as lance  # noqa: E402  (the LanceDB client itself, for the queries)
from numpy.typing import NDArray  # noqa: E402

import cocoindex as coco  # noqa: E402
from cocoindex.connectors import lancedb, localfs  # noqa: E402
from cocoindex.ops.sentence_transformers import SentenceTransformerEmbedder  # noqa: E402
from cocoindex.ops.text import RecursiveSplitter  # noqa: E402
from cocoindex.resources.chunk import Chunk  # noqa: E402
from cocoindex.resources.file import FileLike, PatternFilePathMatcher  # noqa: E402
from cocoindex.resources.id import IdGenerator  # noqa: E402

import peer_common as pc  # noqa: E402

TABLE = "chunks"

# Values the app's components take from the environment (set in the lifespan).
LANCE_DB = coco.ContextKey[lancedb.LanceAsyncConnection]("lance_db")
EMBEDDER = coco.ContextKey[SentenceTransformerEmbedder]("embedder", detect_change=True)

_splitter = RecursiveSplitter()


@dataclass
class ChunkRow:
    """One row of the LanceDB table: a chunk of one document and its vector."""

    id: int
    doc: str
    text: str
    # The vector column's size comes from the embedder (VectorSchemaProvider).
    embedding: Annotated[NDArray, EMBEDDER]


class CountingModel:
    """The SentenceTransformer CocoIndex's embedder calls, counting the texts it
    encodes. Only the indexing path goes through it; queries use the bare model."""

    def __init__(self, model, counter):
        self.model, self.counter = model, counter

    def encode(self, texts, **kwargs):
        self.counter.add(len(texts))
        return self.model.encode(texts, **kwargs)

    def get_sentence_embedding_dimension(self):
        return self.model.get_embedding_dimension()


@coco.fn
async def process_chunk(chunk: Chunk, doc: str, id_gen: IdGenerator, table) -> None:
    table.declare_row(
        row=ChunkRow(
            # Stable per (file, text): an unchanged chunk keeps its row.
            id=await id_gen.next_id(chunk.text),
            doc=doc,
            text=chunk.text,
            # Memoised by CocoIndex on the text: a chunk seen before is not re-encoded.
            embedding=await coco.use_context(EMBEDDER).embed(chunk.text),
        )
    )


@coco.fn(memo=True)
async def process_file(file: FileLike, table, chunk_chars: int) -> None:
    """One component per file; memo=True: skipped when the file is unchanged."""
    text = await file.read_text()
    # Sizes are in bytes (the corpus is ASCII: characters); no overlap, as twinflow.
    chunks = _splitter.split(text, chunk_size=chunk_chars, chunk_overlap=0)
    doc = pc.doc_of(file.file_path.path)
    await coco.map(process_chunk, chunks, doc, IdGenerator(), table)


@coco.fn
async def app_main(sourcedir: pathlib.Path, chunk_chars: int) -> None:
    table = await lancedb.mount_table_target(
        LANCE_DB,
        table_name=TABLE,
        table_schema=await lancedb.TableSchema.from_class(ChunkRow, primary_key=["id"]),
    )
    files = localfs.walk_dir(
        sourcedir,
        recursive=False,
        # The driver writes `.NAME.tmp` and renames: only the .txt files count.
        path_matcher=PatternFilePathMatcher(included_patterns=["*.txt"]),
    )
    await coco.mount_each(process_file, files.items(), table, chunk_chars)


class Worker:
    def __init__(self, args):
        self.args = args
        self.state = os.path.abspath(args.state)
        self.lance_dir = os.path.join(self.state, "lancedb")
        # CocoIndex's internal state (LMDB), read when its environment starts.
        os.environ["COCOINDEX_DB"] = os.path.join(self.state, "coco_db")
        self.counter = pc.Counting()
        self.model = pc.load_minilm(args.model, args.threads)  # local dir, CPU
        self.app = None
        self.table = None
        # An event loop of our own, in a thread: CocoIndex's environment (and the
        # LanceDB connection its lifespan opens) live on it; we submit to it.
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def _lifespan(self):
        worker = self

        @coco.lifespan
        async def lifespan(builder: coco.EnvironmentBuilder) -> AsyncIterator[None]:
            builder.provide(LANCE_DB, await lancedb.connect_async(worker.lance_dir))
            embedder = SentenceTransformerEmbedder(worker.args.model, device="cpu")
            # The model loaded above, behind the counter: `_model` is where the
            # embedder keeps the model it would otherwise load lazily itself.
            embedder._model = CountingModel(worker.model, worker.counter)
            builder.provide(EMBEDDER, embedder)
            yield

    def _update(self):
        """One incremental update (CocoIndex's catch-up), on CocoIndex's loop."""

        async def run():
            handle = self.app.update()
            await handle.result()
            return handle.stats()

        started = time.monotonic()
        stats = self._run(run())
        if stats is not None:
            for name, s in stats.by_component.items():
                pc.log(f"cocoindex: {name}: adds {s.num_adds} reprocesses {s.num_reprocesses} "
                       f"deletes {s.num_deletes} unchanged {s.num_unchanged} errors {s.num_errors}")
        pc.log(f"cocoindex: update in {time.monotonic() - started:.2f} s, "
               f"{self.counter.count} texts embedded so far")
        # A handle of our own on the table, moved to the version just written
        # (a LanceDB handle does not see other connections' writes by itself).
        if self.table is not None:
            self.table.checkout_latest()
        else:
            try:
                self.table = lance.connect(self.lance_dir).open_table(TABLE)
            except ValueError:  # "Table ... was not found": no rows written yet
                pass

    def start(self, fresh):
        if fresh:
            for path in (os.environ["COCOINDEX_DB"], self.lance_dir):
                shutil.rmtree(path, ignore_errors=True)
        os.makedirs(self.state, exist_ok=True)
        self._lifespan()
        self._run(coco.start())  # opens the LMDB state, enters the lifespan
        self.app = coco.App(
            coco.AppConfig(name="PeerTextEmbedding"),
            app_main,
            sourcedir=pathlib.Path(os.path.abspath(self.args.dir)),
            chunk_chars=self.args.chunk_chars,
        )
        self._update()
        return {"chunks": self.table.count_rows() if self.table is not None else 0}

    def sync(self):
        self._update()
        return {}

    def search(self, q, k, doc=None):
        if self.table is None:  # nothing indexed yet
            return {"hits": []}
        vector = self.model.encode([q], normalize_embeddings=True, show_progress_bar=False)[0]
        query = self.table.search(vector, vector_column_name="embedding").distance_type("cosine")
        if doc is not None:
            query = query.where(f"doc = '{doc}'", prefilter=True)
        rows = query.select(["doc", "text", "_distance"]).limit(k).to_list()
        return {"hits": [{"doc": r["doc"], "text": r["text"]} for r in rows]}

    def load(self, queries, clients, seconds, k):
        return pc.in_process_load(self.search, queries, clients, seconds, k)

    def stats(self):
        rss, cpu = pc.self_usage()
        return {"embedded": self.counter.count, "rss_peak_mb": rss, "cpu_s": cpu}

    def stop(self):
        # Runs the lifespan's exit and closes the LMDB state.
        if self.app is not None:
            self._run(coco.stop())
        return {}


if __name__ == "__main__":
    pc.serve(Worker(pc.parse_args()))
