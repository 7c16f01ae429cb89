"""The product's loop, end to end on the command line: corrected COCO → finetune → evaluate shows a gain on the
held-out part. The data is a shapes set the shipped model was not trained on (crowded scenes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import run

from model.shapes_model import SHIPPED_DIR


@pytest.mark.slow
def test_finetuning_on_corrected_boxes_raises_acceptance_on_held_out_images(tmp_path: Path) -> None:
    data = tmp_path / "crowded"
    steps = [
        ("make-shapes", "--out", str(data), "--images", "160", "--seed", "4242", "--min-shapes", "5",
         "--max-shapes", "8"),
        ("split", str(data / "annotations.json"), "--holdout", "0.3", "--seed", "0"),
        ("finetune", str(data / "annotations.train.json"), "--base", str(SHIPPED_DIR), "--out", str(tmp_path / "tuned"),
         "--lora-r", "16", "--learning-rate", "1e-3", "--min-lr", "1e-4", "--warmup-steps", "20", "--batch-size", "16",
         "--max-steps", "150", "--save-every", "1000"),
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
    assert after["overall"]["acceptance_rate"] > before["overall"]["acceptance_rate"] + 0.03, reports
    assert after["detection"]["coverage"] > before["detection"]["coverage"], reports
