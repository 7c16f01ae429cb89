"""The training loop from the command line: make-shapes → split → finetune (→ resume) → evaluate, as subprocesses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, run

from model.coco import load_with_pycocotools, read_coco, split_dataset


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shapes")
    proc = run("make-shapes", "--out", str(out), "--images", "10", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 10 images" in proc.stdout
    return out / "annotations.json"


def test_make_shapes_writes_valid_coco_that_reads_without_an_images_flag(shapes: Path) -> None:
    coco = load_with_pycocotools(shapes)
    assert len(coco.getImgIds()) == 10 and {c["name"] for c in coco.loadCats(coco.getCatIds())} == {
        "square",
        "circle",
        "triangle",
    }
    dataset = read_coco(shapes)
    assert all(record.path.is_file() for record in dataset.images)


def test_split_is_by_image_reproducible_and_keeps_categories(shapes: Path, tmp_path: Path) -> None:
    proc = run("split", str(shapes), "--holdout", "0.3", "--seed", "1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    train = read_coco(tmp_path / "annotations.train.json", shapes.parent)
    held = read_coco(tmp_path / "annotations.heldout.json", shapes.parent)
    assert (len(train.images), len(held.images)) == (7, 3)
    assert {r.path for r in train.images}.isdisjoint({r.path for r in held.images})
    assert train.categories == held.categories == read_coco(shapes).categories
    assert all(record.path.is_file() for record in held.images)
    again = split_dataset(read_coco(shapes), holdout=0.3, seed=1)[1]
    assert [r.path for r in again.images] == [r.path for r in held.images]


def test_split_refuses_an_empty_part(shapes: Path) -> None:
    assert_one_line_error(run("split", str(shapes), "--holdout", "0.01"), "hold out")


def test_finetune_resume_and_evaluate_from_the_command_line(shapes: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    common = ["finetune", str(shapes), "--base", str(tiny_model_dir), "--out", str(out), "--lora-r", "4"]
    common += ["--max-steps", "4", "--batch-size", "4", "--save-every", "2", "--learning-rate", "1e-3"]
    proc = run(*common)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["steps"] == 4 and result["final_loss"] > 0
    assert (out / "adapter_model.safetensors").is_file()

    # A finished run resumes to "nothing left to do" and keeps its result; a fresh run into it is refused.
    again = run(*common, "--resume")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["resumed_from"] == 4
    assert_one_line_error(run(*common), "--resume")

    report_file = tmp_path / "report.json"
    proc = run("evaluate", str(shapes), "--model", str(out), "--max-images", "3", "--report", str(report_file))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(report_file.read_text())
    assert report["n_images"] == 3
    assert report["refer"]["n"] > 0 and report["detection"]["n_gt"] > 0
    assert "acceptance" in proc.stdout.lower() and "AP50" in proc.stdout
    from PIL import Image

    with Image.open(tmp_path / "report.png") as plot:  # the reliability diagram and triage curve beside it
        assert plot.format == "PNG" and plot.width > plot.height > 200
    assert "score plot (reliability and triage) saved to" in proc.stderr
    as_json = run("evaluate", str(shapes), "--model", str(out), "--max-images", "1", "--json", "--tasks", "refer")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["detection"] is None


def test_finetune_errors_are_one_line(shapes: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    base = ["--base", str(tiny_model_dir), "--out", str(tmp_path / "x")]
    assert_one_line_error(run("finetune", str(tmp_path / "missing.json"), *base), "not found")
    assert_one_line_error(run("finetune", str(shapes), *base, "--tasks", "caption"), "caption")
    assert_one_line_error(
        run("finetune", str(shapes), *base, "--lora-r", "0", "--freeze-projection"), "nothing to train"
    )
    assert_one_line_error(
        run("finetune", str(shapes), "--base", str(tmp_path / "nope"), "--out", str(tmp_path / "y")), "not found"
    )
    assert_one_line_error(run("evaluate", str(shapes), "--model", str(tiny_model_dir), "--tasks", "vqa"), "vqa")


def test_hostile_coco_files_are_one_line_errors_before_any_work(
    shapes: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    # Issue 13, items 20 and 21. Before: an x + w that overflowed was read as an infinite box (split wrote
    # Infinity, which is not JSON; finetune crashed), JSON nested 100,000 deep was a RecursionError traceback, and
    # finetune trained on with a missing image until a step needed it.
    data = json.loads(shapes.read_text())
    overflowing = json.loads(json.dumps(data))
    first = overflowing["annotations"][0]
    first["bbox"] = [1.7e308, 0, 1.7e308, 10]
    (tmp_path / "overflow.json").write_text(json.dumps(overflowing))
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    for name, words in (("overflow.json", [f"annotation {first['id']}", "overflows"]), ("deep.json", ["nested"])):
        proc = run("split", str(tmp_path / name), "--images", str(shapes.parent), "--out", str(tmp_path))
        assert_one_line_error(proc, name, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep.json", "overflow.json"]  # nothing written

    missing = json.loads(json.dumps(data))
    missing["images"][-1]["file_name"] = "gone.png"
    (tmp_path / "missing.json").write_text(json.dumps(missing))
    out = tmp_path / "run"
    base = ["--base", str(tiny_model_dir), "--out", str(out), "--images", str(shapes.parent)]
    proc = run("finetune", str(tmp_path / "missing.json"), *base)
    assert_one_line_error(proc, "gone.png", "not found")
    assert not out.exists()  # refused before the first step: no checkpoint, no run folder


def test_a_learning_rate_below_its_floor_is_refused_in_one_line(shapes: Path, tmp_path: Path) -> None:
    common = ["finetune", str(shapes), "--base", str(tmp_path), "--out", str(tmp_path / "o")]
    assert_one_line_error(run(*common, "--learning-rate", "1e-9"), "min_lr 1e-06 is above learning_rate 1e-09")
    assert_one_line_error(run(*common, "--lora-r", "-1"), "--lora-r")
