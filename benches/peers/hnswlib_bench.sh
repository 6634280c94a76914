#!/usr/bin/env bash
# Peer for twinflow's ANN bench: hnswlib (C++ HNSW, Python bindings) on the
# same dataset directory that the Rust bench wrote (format: hnswlib_bench.py).
#
#   benches/peers/hnswlib_bench.sh --data DIR [--m 16] [--ef-construction 128]
#       [--ef 16,32,64,128,256] [--threads-build 2] [--k 10]
#
# The venv lives in ${TWINFLOW_PEERS_VENV:-$HOME/.cache/twinflow/peers/venv}
# (shared with the other peers); hnswlib is pinned and built from its sdist
# with g++ on first use. Prints one JSON line on stdout; setup goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${TWINFLOW_PEERS_VENV:-$HOME/.cache/twinflow/peers/venv}"
hnswlib_version="0.8.0"  # newest on PyPI (2023-12)
if [[ ! -x "$venv/bin/python" ]]; then
  echo "creating the peers venv in $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip >&2
fi
if ! "$venv/bin/python" -c "import importlib.metadata as m, numpy, hnswlib; assert m.version('hnswlib') == '$hnswlib_version'" 2>/dev/null; then
  echo "installing hnswlib==$hnswlib_version into $venv (compiles with g++, once)" >&2
  "$venv/bin/pip" install --quiet numpy "hnswlib==$hnswlib_version" >&2
fi
exec "$venv/bin/python" "$here/hnswlib_bench.py" "$@"
