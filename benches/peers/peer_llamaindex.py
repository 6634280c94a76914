"""LlamaIndex as a worker of `peers_bench.py`: an `IngestionPipeline` with a
document store (`upserts_and_delete`: unchanged documents skipped by hash,
changed ones re-run, missing ones deleted) feeding a Qdrant vector store
(the client's local mode, on disk in `--state`), the way its documentation
keeps an index in sync with a folder.

It is a library, not a service: `sync` reads the folder again
(`SimpleDirectoryReader`, file names as ids) and runs the pipeline; queries
go through a `VectorStoreIndex` retriever in this process. Chunks:
`SentenceSplitter` with `--chunk-chars / 5` tokens (its tokenizer's tokens,
about five characters each), no overlap. State (document store, ingestion
cache) is persisted to `--state` after every run and on `stop`; Qdrant
persists itself.
"""

import os
import threading

import peer_common as pc

args = pc.parse_args()
pc.limit_threads(args.threads)

from llama_index.core import SimpleDirectoryReader, VectorStoreIndex  # noqa: E402
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline  # noqa: E402
from llama_index.core.node_parser import SentenceSplitter  # noqa: E402
from llama_index.core.storage.docstore import SimpleDocumentStore  # noqa: E402
from llama_index.core.vector_stores import ExactMatchFilter, MetadataFilters  # noqa: E402
from llama_index.embeddings.huggingface import HuggingFaceEmbedding  # noqa: E402
from llama_index.vector_stores.qdrant import QdrantVectorStore  # noqa: E402
from qdrant_client import QdrantClient  # noqa: E402

EMBEDDED = pc.Counting()


class CountingEmbedding(HuggingFaceEmbedding):
    """The usual sentence-transformers integration, counting document texts."""

    def _get_text_embeddings(self, texts):
        EMBEDDED.add(len(texts))
        return super()._get_text_embeddings(texts)


class Worker:
    def __init__(self, args):
        self.args = args
        self.embed = CountingEmbedding(model_name=args.model, device="cpu")
        self.client = None
        self.pipeline = None
        self.retriever = None
        self.lock = threading.Lock()

    def _read(self):
        return SimpleDirectoryReader(self.args.dir, filename_as_id=True, required_exts=[".txt"]).load_data()

    def _persist(self):
        self.pipeline.persist(self.args.state)

    def _run(self):
        with self.lock:
            self.pipeline.run(documents=self._read())
            self._persist()
            index = VectorStoreIndex.from_vector_store(self.pipeline.vector_store, embed_model=self.embed)
            self.retriever = index.as_retriever(similarity_top_k=10)

    def start(self, fresh):
        self.client = QdrantClient(path=os.path.join(self.args.state, "qdrant"))
        vectors = QdrantVectorStore(client=self.client, collection_name="chunks")
        self.pipeline = IngestionPipeline(
            transformations=[SentenceSplitter(chunk_size=self.args.chunk_chars // 5, chunk_overlap=0), self.embed],
            docstore=SimpleDocumentStore(),
            vector_store=vectors,
            docstore_strategy=DocstoreStrategy.UPSERTS_AND_DELETE,
        )
        if not fresh:
            self.pipeline.load(self.args.state)
        # A restart reads the folder again: unchanged files are skipped by hash.
        self._run()
        return {"chunks": self.client.count("chunks").count}

    def sync(self):
        self._run()
        return {}

    def _search(self, q, k, doc=None):
        retriever = self.retriever
        if retriever._similarity_top_k != k or doc is not None:
            only = None
            if doc is not None:
                only = MetadataFilters(filters=[ExactMatchFilter(key="file_name", value=f"{doc}.txt")])
            retriever = VectorStoreIndex.from_vector_store(
                self.pipeline.vector_store, embed_model=self.embed
            ).as_retriever(similarity_top_k=k, filters=only)
        # The local mode is not safe to call from several threads at once.
        with self.lock:
            found = retriever.retrieve(q)
        return [{"doc": pc.doc_of(n.node.metadata.get("file_name", "")), "text": n.node.get_content()} for n in found]

    def search(self, q, k, doc=None):
        return {"hits": self._search(q, k, doc)}

    def load(self, queries, clients, seconds, k):
        return pc.in_process_load(self._search, queries, clients, seconds, k)

    def stats(self):
        peak, cpu = pc.self_usage()
        return {"embedded": EMBEDDED.count, "rss_peak_mb": peak, "cpu_s": cpu}

    def stop(self):
        if self.pipeline is not None:
            self._persist()
            self.client.close()
        return {}


if __name__ == "__main__":
    pc.serve(Worker(args))
