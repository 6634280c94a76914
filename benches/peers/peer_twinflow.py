"""twinflow as a worker of `peers_bench.py`: the `twinflow` binary watching
the directory (`twinflow up --watch DIR`), asked over its HTTP API.

  peer_twinflow.py --dir DIR --state DIR --model DIR --threads N --chunk-chars N --twinflow BIN

The server runs in its own process with the state in `--state` (data
directory and config); `stats` reads that process's peak memory and CPU from
/proc and the texts it embedded from `/v1/status` (chunk texts only: queries
are not counted there). Chunks are articles of `--chunk-chars` characters at
most (two thirds of that at least), cut at sentence ends, each embedded with
its document's title as twinflow does by default.
"""

import json
import os
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import peer_common as pc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Worker:
    def __init__(self, args):
        self.args = args
        self.server = None
        self.base = None
        self.key = None

    def _request(self, path, body=None, timeout=60):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method="POST" if data else "GET")
        request.add_header("Authorization", f"Bearer {self.key}")
        if data:
            request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())

    def _status(self):
        return self._request("/v1/status")

    def start(self, fresh):
        data = os.path.join(self.args.state, "data")
        port = free_port()
        config = os.path.join(self.args.state, "twinflow.toml")
        chunk = self.args.chunk_chars
        with open(config, "w") as f:
            f.write(
                f"""[storage]
data_dir = "{data}"
[server]
addr = "127.0.0.1:{port}"
[engine]
workers = {self.args.threads}
[drift]
enabled = false
[training]
on_drift = false
[embedder]
type = "minilm"
config = {{ model_dir = "{self.args.model}" }}
[chunking.article]
min_chars = {chunk * 2 // 3}
max_chars = {chunk}
boundary_one_in = 4
"""
            )
        env = dict(os.environ, RAYON_NUM_THREADS=str(self.args.threads), RUST_LOG="warn")
        self.server = subprocess.Popen(
            [self.args.twinflow, "--config", config, "up", "--watch", self.args.dir],
            env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.args.state, "server.log"), "a"),
        )
        self.base = f"http://127.0.0.1:{port}"
        key_file = os.path.join(data, "_auth", "admin.key")
        files = len([n for n in os.listdir(self.args.dir) if n.endswith(".txt")])
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"twinflow exited with {self.server.returncode}; see {self.args.state}/server.log")
            try:
                if self.key is None:
                    with open(key_file) as f:
                        self.key = f.read().strip()
                status = self._status()
                documents = status["tables"].get("documents", 0)
                if documents >= files and status["pending_changes"] == 0 and status["texts_waiting"] == 0:
                    return {"chunks": status["tables"].get("chunks")}
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise RuntimeError("twinflow did not take in the directory within an hour")

    def sync(self):
        # The watch source sees the files change: nothing to tell.
        return {}

    def _search(self, q, k, doc=None):
        query = {"q": q, "k": k}
        if doc is not None:
            query["doc_id"] = f"file:{doc}.txt"
        query = urllib.parse.urlencode(query)
        hits = self._request(f"/v1/search?{query}")["results"]
        out = []
        for hit in hits:
            # A chunk text shared by several documents is one hit with a source each.
            for source in hit["sources"]:
                out.append({"doc": pc.doc_of(source["doc_id"].removeprefix("file:")), "text": hit["text"]})
        return out

    def search(self, q, k, doc=None):
        return {"hits": self._search(q, k, doc)}

    def load(self, queries, clients, seconds, k):
        # Each client thread is a separate HTTP connection to the server.
        report = pc.in_process_load(self._search, queries, clients, seconds, k)
        report["via"] = "http"
        return report

    def stats(self):
        peak, cpu = pc.process_usage(self.server.pid)
        return {"embedded": self._status()["texts_embedded"], "rss_peak_mb": peak, "cpu_s": cpu}

    def stop(self):
        if self.server and self.server.poll() is None:
            self.server.terminate()
            self.server.wait(timeout=120)
        return {}


if __name__ == "__main__":
    pc.serve(Worker(pc.parse_args(extra=("--twinflow",))))
