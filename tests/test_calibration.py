"""Calibration that travels with the model: the isotonic fit, calibration.json saved and reloaded, applied by the
Proposer (raw score kept beside it), ignored with a warning when malformed or made for other weights, and
`evaluate --calibrate` writing it. The shipped tiny shapes model answers real requests; it is copied, never changed."""

from __future__ import annotations

import itertools
import json
import logging
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt_annotate.cli import main
from model.annotations import Task
from model.calibration import CALIBRATION_NAME, Calibration, TaskCalibration, fit_isotonic, load_calibration
from model.calibration import weights_fingerprint as fingerprint_of
from model.proposer import Proposer, ProposeRequest
from model.scoring import DEFAULT_SCORE
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR


def test_isotonic_fit_by_hand() -> None:
    # (0.1 kept) (0.2 rejected) violate monotonicity and pool to 0.5 at 0.15; (0.3 kept) (0.4 kept) pool to 1.0 at 0.35
    assert fit_isotonic([0.4, 0.1, 0.3, 0.2], [True, True, True, False]) == (
        pytest.approx([0.15, 0.35]),
        pytest.approx([0.5, 1.0]),
    )
    # equal scores get one value whatever their order
    assert fit_isotonic([0.5, 0.5, 0.9], [True, False, True]) == (pytest.approx([0.5, 0.9]), pytest.approx([0.5, 1.0]))


@settings(max_examples=150, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.integers(0, 100).map(lambda n: n / 100), st.booleans()), min_size=1, max_size=80))
def test_isotonic_fit_is_monotone_and_keeps_the_kept_rate(pairs: list[tuple[float, bool]]) -> None:
    scores, kept = [s for s, _ in pairs], [k for _, k in pairs]
    x, y = fit_isotonic(scores, kept)
    assert all(a < b for a, b in itertools.pairwise(x)) and all(a < b for a, b in itertools.pairwise(y))
    assert all(0 <= v <= 1 for v in x + y)
    mapping = TaskCalibration(x=x, y=y, n=len(pairs), n_kept=sum(kept))
    calibrated = [mapping(s) for s in scores]
    assert all(mapping(a) <= mapping(b) for a, b in zip(sorted(scores), sorted(scores)[1:], strict=False))
    # pooling keeps each block's mean: the calibrated scores average to the kept rate (at the fitted points)
    if len(set(scores)) == len(x):  # no pooling across distinct scores: the fit is exact at each score
        assert sum(calibrated) == pytest.approx(sum(kept))


@pytest.fixture()
def model_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-shapes"
    shutil.copytree(SHIPPED_DIR, folder)
    return folder


def _answers(folder: Path, image: Path) -> list:
    proposer = Proposer.from_pretrained(folder, device="cpu")
    return proposer.propose_batch(
        [ProposeRequest(image, Task.detection, "circle"), ProposeRequest(image, Task.refer, "the square")]
    )


def test_a_saved_calibration_is_applied_and_the_raw_score_kept(model_copy: Path, tmp_path: Path) -> None:
    make_shapes(tmp_path / "scene", images=1, seed=5, max_shapes=3)
    image = next((tmp_path / "scene" / "images").iterdir())
    before = _answers(model_copy, image)
    assert not any(r.calibrated for r in before) and all(p.raw_score is None for r in before for p in r.proposals)

    steep = TaskCalibration(x=[0.0, 0.5, 1.0], y=[0.0, 0.1, 0.2], n=10, n_kept=2)  # easy to recognise: raw / 5
    Calibration(
        fingerprint=fingerprint_of(model_copy),
        score=DEFAULT_SCORE,
        created="2026-11-29T00:00:00+00:00",
        tasks={Task.detection: steep},
    ).save(model_copy)
    after = _answers(model_copy, image)
    detection, refer = after
    assert detection.calibrated and not refer.calibrated  # only [detection] has a map
    assert detection.proposals, "the shipped model finds the circle"
    for old, new in zip(before[0].proposals, detection.proposals, strict=True):
        assert new.box == old.box and new.raw_score == pytest.approx(old.score)
        assert new.score == pytest.approx(old.score / 5)
    assert [p.score for p in refer.proposals] == [p.score for p in before[1].proposals]


@pytest.mark.parametrize("problem", ["malformed", "not monotone", "other weights", "another raw score"])
def test_a_calibration_that_does_not_fit_is_ignored_with_a_warning(
    problem: str, model_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = Calibration(
        fingerprint=fingerprint_of(model_copy),
        score=DEFAULT_SCORE,
        created="2026-11-29T00:00:00+00:00",
        tasks={Task.detection: TaskCalibration(x=[0.0, 1.0], y=[0.0, 0.5], n=4, n_kept=1)},
    )
    payload = json.loads(good.model_dump_json())
    if problem == "malformed":
        text = "{not json"
    elif problem == "not monotone":
        payload["tasks"]["detection"]["y"] = [0.9, 0.1]
        text = json.dumps(payload)
    elif problem == "other weights":
        payload["fingerprint"] = "sha256:000000000000000000000000"  # fitted on another fine-tune
        text = json.dumps(payload)
    else:
        del payload["score"]  # a file from before the score was recorded: it maps the geometric mean
        text = json.dumps(payload)
    (model_copy / CALIBRATION_NAME).write_text(text)
    with caplog.at_level(logging.WARNING, logger="model.calibration"):
        assert load_calibration(model_copy, score=DEFAULT_SCORE) is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert "ignoring" in line and "scores stay raw" in line
    assert Proposer.from_pretrained(model_copy, device="cpu").calibration is None


def test_changed_weights_change_the_fingerprint(model_copy: Path) -> None:
    before = fingerprint_of(model_copy)
    weights = model_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # the last bytes are tensor data: a fine-tune changes them
    weights.write_bytes(bytes(data))
    assert fingerprint_of(model_copy) != before


def test_evaluate_calibrate_saves_a_calibration_that_later_loads_apply(
    model_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    coco = make_shapes(tmp_path / "held-out", images=8, seed=31, max_shapes=3)
    argv = ["evaluate", str(coco), "--model", str(model_copy), "--device", "cpu", "--calibrate", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert report["scores"]["detection"]["roc_auc"] is not None  # the report measures the raw scores
    assert "saved to" in captured.err
    calibration = load_calibration(model_copy, score=DEFAULT_SCORE)
    assert calibration is not None and Task.detection in calibration.tasks
    assert calibration.tasks[Task.detection].n == report["scores"]["detection"]["n"]
    assert calibration.source == str(coco)

    # evaluated again, the scores are the calibrated ones: the kept rate per score bin is what the score says
    assert main(["evaluate", str(coco), "--model", str(model_copy), "--device", "cpu", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)["scores"]["detection"]
    assert again["ece"] <= report["scores"]["detection"]["ece"]  # in-sample: isotonic can only reduce it


def test_autolabel_writes_both_scores_of_a_calibrated_model(
    model_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Calibration(
        fingerprint=fingerprint_of(model_copy),
        score=DEFAULT_SCORE,
        created="2026-11-29T00:00:00+00:00",
        tasks={Task.detection: TaskCalibration(x=[0.0, 0.5, 1.0], y=[0.0, 0.1, 0.2], n=10, n_kept=2)},
    ).save(model_copy)
    make_shapes(tmp_path / "scenes", images=3, seed=9, max_shapes=2)
    out = tmp_path / "out"
    argv = ["autolabel", str(tmp_path / "scenes" / "images"), "--model", str(model_copy), "--out", str(out)]
    assert main([*argv, "--labels", "square,circle,triangle", "--device", "cpu", "--quiet"]) == 0
    capsys.readouterr()
    annotations = json.loads((out / "proposals.coco.json").read_text())["annotations"]
    assert annotations, "the shipped model finds shapes"
    for annotation in annotations:  # the calibrated score is the score; the raw one is kept beside it
        assert annotation["score"] == pytest.approx(annotation["attributes"]["raw_score"] / 5)
    regions = [r for t in json.loads((out / "label-studio-tasks.json").read_text()) for p in t["predictions"]
               for r in p["result"]]  # fmt: skip
    assert sorted(r["score"] for r in regions) == pytest.approx(sorted(a["score"] for a in annotations))


def test_finetune_with_a_heldout_split_ships_a_calibrated_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = make_shapes(tmp_path / "train", images=4, seed=3, max_shapes=2)
    heldout = make_shapes(tmp_path / "heldout", images=5, seed=31, max_shapes=3)
    out = tmp_path / "tuned"
    argv = ["finetune", str(train), "--base", str(SHIPPED_DIR), "--out", str(out), "--device", "cpu", "--lora-r", "4",
            "--max-steps", "1", "--batch-size", "2", "--learning-rate", "1e-6", "--min-lr", "0", "--warmup-steps", "0",
            "--heldout", str(heldout)]  # fmt: skip
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "held-out acceptance" in err and "calibration for" in err and "detection (" in err
    report = json.loads((out / "heldout-evaluation.json").read_text())
    assert report["n_images"] == 5 and (out / "heldout-evaluation.png").is_file()
    calibration = load_calibration(out, score=DEFAULT_SCORE)
    assert calibration is not None and calibration.source == str(heldout)
    assert calibration.tasks[Task.detection].n == report["scores"]["detection"]["n"]
    assert Proposer.from_pretrained(out, device="cpu").calibration == calibration  # the trained model applies it


def test_a_heldout_file_that_does_not_read_stops_training_before_it_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train = make_shapes(tmp_path / "train", images=2, seed=3, max_shapes=2)
    out = tmp_path / "tuned"
    argv = ["finetune", str(train), "--base", str(SHIPPED_DIR), "--out", str(out)]
    argv += ["--heldout", str(tmp_path / "no.json")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert "no.json" in err and len(err.splitlines()) == 1 and not out.exists()
