#!/usr/bin/env bash
# The venvs of `twinflow-bench peers`, made on first use, outside the repository:
#
#   benches/peers/peers_venvs.sh NAME     (st, pathway, cocoindex, llamaindex, qdrant)
#
# under ${TWINFLOW_PEERS_DIR:-$HOME/.cache/twinflow/peers}. `st` holds PyTorch
# and sentence-transformers (PyPI's torch: a CUDA build, ~6 GB, run on the
# CPU); every peer's venv sees it through a .pth file, so torch is installed
# once. Exact versions, so that a figure can be measured again.
set -euo pipefail
name="$1"
peers="${TWINFLOW_PEERS_DIR:-$HOME/.cache/twinflow/peers}"
declare -A packages=(
  [st]="torch==2.15.0 sentence-transformers==6.2.0"
  [pathway]="pathway==0.33.0"
  [cocoindex]="cocoindex==1.0.26 lancedb==0.40.0 pyarrow==26.0.1"
  [llamaindex]="llama-index-core==0.14.25 llama-index-embeddings-huggingface==0.8.0 llama-index-vector-stores-qdrant==0.10.4 qdrant-client==1.20.0"
  [qdrant]="qdrant-client==1.20.0"
)
[[ -n "${packages[$name]:-}" ]] || { echo "unknown venv $name" >&2; exit 2; }
venv="$peers/$name"
stamp="$venv/.twinflow-packages"
if [[ -f "$stamp" && "$(cat "$stamp")" == "${packages[$name]}" ]]; then
  exit 0
fi
if [[ "$name" != st ]]; then
  "$0" st
fi
echo "making the $name venv in $venv (once): ${packages[$name]}" >&2
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip >&2
if [[ "$name" != st ]]; then
  site="$("$peers/st/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  own="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$site" > "$own/twinflow-st.pth"
fi
# shellcheck disable=SC2086
"$venv/bin/pip" install --quiet ${packages[$name]} >&2
echo "${packages[$name]}" > "$stamp"
