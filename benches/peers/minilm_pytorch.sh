#!/usr/bin/env bash
# Peer for `twinflow-bench embed`: runs sentence-transformers (PyTorch, CPU)
# on the same texts and weights, in its own venv outside the repository.
#
#   benches/peers/minilm_pytorch.sh --model-dir DIR --texts FILE [--batch 32] [--threads 2]
#
# The venv lives in ${TWINFLOW_PEERS_VENV:-$HOME/.cache/twinflow/peers/venv}
# and is created on first use (CPU-only torch where its index is reachable,
# PyPI's torch otherwise). Prints one JSON line on stdout; setup goes to stderr.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${TWINFLOW_PEERS_VENV:-$HOME/.cache/twinflow/peers/venv}"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import sentence_transformers' 2>/dev/null; then
  echo "creating the PyTorch peer venv in $venv (once)" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip >&2
  "$venv/bin/pip" install --quiet --index-url https://download.pytorch.org/whl/cpu torch >&2 2>/dev/null \
    || "$venv/bin/pip" install --quiet torch >&2
  "$venv/bin/pip" install --quiet sentence-transformers >&2
fi
exec "$venv/bin/python" "$here/minilm_pytorch.py" "$@"
