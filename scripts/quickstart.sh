#!/usr/bin/env bash
# Set up, then run the main job offline: a tiny model trained on synthetic shapes finds a shape on an image it has
# never seen, and prints the proposal as JSON. No network beyond PyPI is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/minigpt-annotate make-tiny --trained --out tiny-model
.venv/bin/minigpt-annotate make-shapes --out quickstart-shapes --images 1 --seed 7 --exif-fraction 0 --max-shapes 2
.venv/bin/minigpt-annotate propose quickstart-shapes/images/000001.png --task detection --query circle \
    --model tiny-model --json
