"""The book's stack as a worker of `peers_bench.py`: a batch feature pipeline
that reads every document, chunks it, embeds every chunk with
sentence-transformers and loads a fresh Qdrant collection (the client's
local mode, persisted in `--state`), then switches queries to it, as a
scheduled pipeline of the LLM Twin book does.

Nothing is incremental: `sync` is a whole run. Chunks: sentences packed up to
`--chunk-chars` characters (the same rule as twinflow's, without the title).
A restart reopens the persisted collection and embeds nothing until the next
run.
"""

import glob
import os
import re
import threading
import uuid

import peer_common as pc

args = pc.parse_args()

from qdrant_client import QdrantClient, models  # noqa: E402

EMBEDDED = pc.Counting()
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def chunks(text, limit):
    """Sentences packed into pieces of at most `limit` characters."""
    out, current = [], ""
    for sentence in SENTENCE_END.split(text.strip()):
        if current and len(current) + 1 + len(sentence) > limit:
            out.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        out.append(current)
    return out


class Worker:
    def __init__(self, args):
        self.args = args
        self.model = pc.load_minilm(args.model, args.threads)
        self.client = None
        self.lock = threading.Lock()
        self.generation = 0
        self.collection = None

    def _run(self):
        self.generation += 1
        name = f"chunks_{self.generation}"
        points = []
        for path in sorted(glob.glob(os.path.join(self.args.dir, "*.txt"))):
            with open(path) as f:
                text = f.read()
            for i, piece in enumerate(chunks(text, self.args.chunk_chars)):
                points.append((pc.doc_of(path), i, piece))
        vectors = self.model.encode([p[2] for p in points], batch_size=32, normalize_embeddings=True)
        EMBEDDED.add(len(points))
        self.client.create_collection(
            name, vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.COSINE)
        )
        for start in range(0, len(points), 256):
            self.client.upsert(
                name,
                points=[
                    models.PointStruct(
                        id=str(uuid.uuid4()), vector=vectors[j].tolist(), payload={"doc": p[0], "text": p[2]}
                    )
                    for j, p in enumerate(points[start : start + 256], start)
                ],
            )
        old, self.collection = self.collection, name
        if old:
            self.client.delete_collection(old)
        return len(points)

    def start(self, fresh):
        self.client = QdrantClient(path=os.path.join(self.args.state, "qdrant"))
        if fresh:
            return {"chunks": self._run()}
        names = [c.name for c in self.client.get_collections().collections]
        self.collection = max(names, key=lambda n: int(n.rsplit("_", 1)[1]))
        self.generation = int(self.collection.rsplit("_", 1)[1])
        return {"chunks": self.client.count(self.collection).count}

    def sync(self):
        self._run()
        return {}

    def _search(self, q, k, doc=None):
        vector = self.model.encode([q], normalize_embeddings=True)[0].tolist()
        only = None
        if doc is not None:
            only = models.Filter(must=[models.FieldCondition(key="doc", match=models.MatchValue(value=doc))])
        # The local mode is not safe to call from several threads at once.
        with self.lock:
            found = self.client.query_points(
                self.collection, query=vector, query_filter=only, limit=k, with_payload=True
            ).points
        return [{"doc": p.payload["doc"], "text": p.payload["text"]} for p in found]

    def search(self, q, k, doc=None):
        return {"hits": self._search(q, k, doc)}

    def load(self, queries, clients, seconds, k):
        return pc.in_process_load(self._search, queries, clients, seconds, k)

    def stats(self):
        peak, cpu = pc.self_usage()
        return {"embedded": EMBEDDED.count, "rss_peak_mb": peak, "cpu_s": cpu}

    def stop(self):
        if self.client is not None:
            self.client.close()
        return {}


if __name__ == "__main__":
    pc.serve(Worker(args))
