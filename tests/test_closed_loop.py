"""The product's loop, end to end on the command line: corrected COCO → finetune → evaluate on the held-out part.

The data is a shapes set in a labeller's own taxonomy (box, disc and wedge for square, circle and triangle), on
scenes the shipped model never saw; it is bench/closed_loop.py's default run. Measured there: detection coverage
0.338 → 0.453 and AP50 0.131 → 0.162, while refer accuracy fell (0.569 → 0.511) and so did the overall acceptance
rate (0.407 → 0.370). The test holds the gains that the tiny model really shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import run

from model.synthetic.shapes_model import SHIPPED_DIR


@pytest.mark.slow
def test_finetuning_on_corrected_boxes_finds_more_of_the_held_out_boxes(tmp_path: Path) -> None:
    data = tmp_path / "crowded"
    steps = [
        ("make-shapes", "--out", str(data), "--images", "300", "--seed", "4242",
         "--rename", "square=box,circle=disc,triangle=wedge"),
        ("split", str(data / "annotations.json"), "--holdout", "0.3", "--seed", "0"),
        ("finetune", str(data / "annotations.train.json"), "--base", str(SHIPPED_DIR), "--out", str(tmp_path / "tuned"),
         "--lora-r", "16", "--learning-rate", "1e-3", "--min-lr", "1e-4", "--warmup-steps", "20", "--batch-size", "16",
         "--max-steps", "300", "--save-every", "1000"),
    ]  # fmt: skip
    for args in steps:
        proc = run(*args)
        assert proc.returncode == 0, proc.stderr

    held_out = str(data / "annotations.heldout.json")
    reports = {}
    for name, model in (("before", SHIPPED_DIR), ("after", tmp_path / "tuned")):
        proc = run("evaluate", held_out, "--model", str(model), "--json", "--batch-size", "64")
        assert proc.returncode == 0, proc.stderr
        reports[name] = json.loads(proc.stdout)
    before, after = reports["before"], reports["after"]
    assert after["detection"]["coverage"] > before["detection"]["coverage"] + 0.05, reports
    assert after["detection"]["ap50"] > before["detection"]["ap50"], reports
