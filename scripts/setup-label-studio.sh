#!/usr/bin/env bash
# Create a separate venv holding the Label Studio server used by the end-to-end tests (tests/ls_harness.py).
# LABEL_STUDIO_VENV picks the venv (default .ls-venv; a relative path is taken from the repo root). It is kept apart
# from .venv on purpose: label-studio pins its own Django/pandas/SDK stack (about 1 GB).
# Idempotent: does nothing when the venv already holds label-studio at the pinned version. The version is read from
# the package metadata, because `label-studio --version` migrates a database in ~/.local/share/label-studio and then
# starts a server on 0.0.0.0:8080.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
LS_VERSION="1.23.2"
VENV="${LABEL_STUDIO_VENV:-.ls-venv}"
case "$VENV" in
    /*) ;;
    *) VENV="$(pwd)/$VENV" ;;
esac

installed_version() {
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("label-studio"))' 2>/dev/null || true
}

if [ -x "$VENV/bin/label-studio" ] && [ "$(installed_version)" = "$LS_VERSION" ]; then
    echo "label-studio $LS_VERSION already installed in $VENV"
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "label-studio==$LS_VERSION"
if [ "$(installed_version)" != "$LS_VERSION" ] || [ ! -x "$VENV/bin/label-studio" ]; then
    echo "label-studio $LS_VERSION did not install correctly into $VENV" >&2
    exit 1
fi
echo "installed label-studio $LS_VERSION into $VENV"
