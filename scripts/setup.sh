#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv with every extra.
# Idempotent: re-running only installs what is missing. Safe to call from CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
# torch is pinned in pyproject (CPU build on this kind of machine); an unpinned torch pulls CUDA.
extras="${SAIL_EXTRAS:-train,operator,dev}"
stamp=".venv/.sail-installed-${extras//,/-}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q -e ".[${extras}]"
  touch "$stamp"
fi
