#!/usr/bin/env bash
# Create .venv and install minigpt-annotate with its dev tools.
# TORCH_SPEC picks the torch build: the default is the CPU wheel used in CI; on a GPU machine install the CUDA build
# you want first (https://pytorch.org) or set e.g. TORCH_SPEC="torch==2.13.0" with your index.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "installed into $(pwd)/.venv"
