"""Shared by tests/test_autolabel.py and tests/test_autolabel_ray.py: the shapes folder both label, the files of a
clean `--engine local` run they compare against, and the helpers that build a command line and read a run's results.

A test module imports the fixtures it uses (`from autolabel_fixtures import clean_run, shapes`); module-scoped, each
module builds them once.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from same_answers import assert_same_proposals

from minigpt_annotate.cli import main
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR

__all__ = ["IMAGES", "LABELS", "ROOT", "_args", "_journal_keys", "_same_files", "clean_run", "shapes"]

ROOT = Path(__file__).resolve().parents[1]
LABELS = "square,circle,triangle"
IMAGES = 8


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 shapes scenes (half of them with EXIF rotations) in images/ and images/more/, and one broken file."""
    root = tmp_path_factory.mktemp("shapes")
    make_shapes(root, images=IMAGES, seed=21, max_shapes=1, exif_fraction=0.5)
    images = root / "images"
    (images / "more").mkdir()
    for name in sorted(p.name for p in images.iterdir() if p.is_file())[IMAGES // 2 :]:
        (images / name).rename(images / "more" / name)
    (images / "more" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (images / "notes.txt").write_text("not an image name: not listed")
    return root


def _args(source: Path, out: Path, *extra: str) -> list[str]:
    return ["autolabel", str(source), "--model", str(SHIPPED_DIR), "--out", str(out), "--device", "cpu", *extra]


@pytest.fixture(scope="module")
def clean_run(shapes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "out"
    assert main(_args(shapes / "images", out, "--labels", LABELS, "--quiet")) == 0
    return out


def _journal_keys(out: Path) -> list[str]:
    db = sqlite3.connect(f"file:{out / 'journal.sqlite'}?mode=ro", uri=True)
    try:
        return [key for (key,) in db.execute("SELECT key FROM results")]
    finally:
        db.close()


def _same_files(got: Path, want: Path) -> None:
    for name in ("proposals.coco.json", "label-studio-tasks.json"):
        assert_same_proposals(json.loads((got / name).read_text()), json.loads((want / name).read_text()))
    for name in ("failures.jsonl", "label-config.xml"):
        assert (got / name).read_text() == (want / name).read_text()
