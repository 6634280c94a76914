#!/usr/bin/env bash
# Peer for twinflow's generate bench: llama.cpp through llama-cpp-python, on
# the same GGUF and the same prompt token ids (format: llama_cpp_bench.py).
#
#   benches/peers/llama_cpp_bench.sh --model FILE.gguf --prompts PROMPTS.json
#       [--tokens 128] [--runs 3] [--threads 2]
#
# The venv lives in ${TWINFLOW_PEERS_VENV:-$HOME/.cache/twinflow/peers/venv}
# (shared with the other peers); llama-cpp-python is pinned and built from its
# sdist with explicit CPU flags on first use (~5 min on 2 cores: a
# -DGGML_NATIVE=ON build crashed on generation on this kind of machine).
# Prints one JSON line on stdout; setup goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${TWINFLOW_PEERS_VENV:-$HOME/.cache/twinflow/peers/venv}"
version="0.3.36"  # newest on PyPI when pinned (2026-12)
if [[ ! -x "$venv/bin/python" ]]; then
  echo "creating the peers venv in $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip >&2
fi
if ! "$venv/bin/python" -c "import importlib.metadata as m, numpy, llama_cpp; assert m.version('llama_cpp_python') == '$version'" 2>/dev/null; then
  echo "building llama-cpp-python==$version into $venv (compiles llama.cpp, once)" >&2
  # x86-64 with AVX2/FMA/F16C and AVX-512 (VNNI included) where the CPU has them.
  flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
  if grep -q avx512_vnni /proc/cpuinfo; then
    flags="$flags -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON"
  fi
  CMAKE_ARGS="$flags" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "$venv/bin/pip" install --quiet --no-binary llama-cpp-python numpy "llama-cpp-python==$version" >&2
fi
exec "$venv/bin/python" "$here/llama_cpp_bench.py" "$@"
