#!/usr/bin/env bash
# Set up, write a tiny offline model, and ask it for boxes on a real photo. No network beyond PyPI is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/minigpt-annotate make-tiny --out tiny-model
PHOTO=$(.venv/bin/python -c "import skimage.data, pathlib; print(pathlib.Path(skimage.data.__file__).parent / 'coffee.png')")
.venv/bin/minigpt-annotate propose "$PHOTO" --task detection --query "cup" --model tiny-model --json --max-new-tokens 40
