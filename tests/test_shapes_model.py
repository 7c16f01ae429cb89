"""The shipped tiny model trained on synthetic shapes: small, real, and it really finds shapes it never saw."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import run

from model.annotations import Task
from model.coco import read_coco
from model.evaluation.runner import evaluate_model
from model.network import MiniGPTv2ForConditionalGeneration
from model.proposer import Proposer
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR, ShapesRecipe, train_tiny_shapes

# Training used seeds 0 (several shapes), 1 (single shapes) and 3 (refine); this seed's images were never seen.
HELD_OUT_SEED = 9001
# Measured on this held-out set (450 images, 1096 refer questions): refer Acc@0.5 0.785, detection AP50 0.664
# (README). The targets were 0.80 and 0.60. The floors sit about four standard errors below the measurements: noise
# cannot cross them, a model that ignores the image (refer about 0.1), mislocates, or the model shipped before
# (0.565 and 0.164) does.
REFER_ACC_MIN = 0.73
DETECTION_AP50_MIN = 0.55


@pytest.fixture(scope="module")
def held_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("held-out"), images=450, seed=HELD_OUT_SEED)


@pytest.fixture(scope="module")
def shipped() -> Proposer:
    return Proposer.from_pretrained(SHIPPED_DIR, device="cpu", dtype="float32")


def test_shipped_model_is_the_real_architecture_and_small() -> None:
    weights = SHIPPED_DIR / "model.safetensors"
    assert weights.stat().st_size <= 8 * 1024 * 1024
    model = MiniGPTv2ForConditionalGeneration.from_pretrained(SHIPPED_DIR)
    assert type(model.language_model).__name__ == "LlamaForCausalLM"
    assert type(model.vision_model).__name__ == "EvaVisionModel"
    assert (SHIPPED_DIR / "tokenizer.json").is_file() and (SHIPPED_DIR / "processor_config.json").is_file()
    recipe = json.loads((SHIPPED_DIR / "recipe.json").read_text())
    assert recipe["weights_bytes"] == weights.stat().st_size  # the recipe report describes these very weights


def test_shipped_model_clears_the_thresholds_on_held_out_shapes(held_out: Path, shipped: Proposer) -> None:
    report = evaluate_model(shipped, read_coco(held_out), tasks=(Task.refer, Task.detection), batch_size=64)
    assert report.refer is not None and report.detection is not None
    assert report.refer.n >= 1000
    assert report.refer.acc_iou50 is not None and report.refer.acc_iou50 >= REFER_ACC_MIN, report.format_table()
    assert report.detection.ap50 is not None and report.detection.ap50 >= DETECTION_AP50_MIN, report.format_table()


def test_make_tiny_trained_writes_a_model_that_finds_a_shape(held_out: Path, tmp_path: Path) -> None:
    proc = run("make-tiny", "--trained", "--out", str(tmp_path / "shapes-model"))
    assert proc.returncode == 0, proc.stderr
    record = next(r for r in read_coco(held_out).images if len(r.annotations) == 1)
    truth = record.annotations[0]
    proc = run(
        "propose", str(record.path), "--task", "refer", "--query", truth.phrase or truth.label,
        "--model", str(tmp_path / "shapes-model"), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    proposals = json.loads(proc.stdout)["proposals"]
    assert proposals, proc.stdout
    from model.annotations import Box

    assert Box.from_xyxy(proposals[0]["bbox"]).iou(truth.box) >= 0.5


def test_recipe_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    small = ShapesRecipe().shrunk(images=12, batch_size=4).scaled(12)  # model/recipes/tiny-shapes.yaml, tiny
    a = train_tiny_shapes(tmp_path / "a", seed=3, recipe=small)
    b = train_tiny_shapes(tmp_path / "b", seed=3, recipe=small)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a["loss_first_last"] == b["loss_first_last"]
    assert (
        Proposer.from_pretrained(tmp_path / "a", device="cpu")
        .propose(read_coco(make_shapes(tmp_path / "one", images=1, seed=5)).images[0].path, Task.detection, "circle")
        .text
    )  # the result answers through the normal inference path
