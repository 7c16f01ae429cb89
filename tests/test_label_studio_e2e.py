"""End to end against a real Label Studio 1.23.2 (own venv, `scripts/setup-label-studio.sh`) and a real
`minigpt-annotate serve` with the trained tiny shapes model: batch predictions through the Data Manager action,
interactive annotating from a typed prompt, and a submitted annotation arriving in the COCO store via the webhook.

The backend downloads the uploaded images from Label Studio with a personal access token, as a user would set it up.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_process import running_backend, serve_command
from ls_harness import LabelStudioServer, free_port
from patience import HANG_S

from minigpt_annotate.cli import main
from model.annotations import Box
from model.coco import load_with_pycocotools, read_coco
from model.regions import value_to_box
from model.synthetic.shapes import make_shapes

pytestmark = pytest.mark.slow

LABEL_CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="square"/><Label value="circle"/><Label value="triangle"/>
  </RectangleLabels>
  <TextArea name="prompt" toName="image" editable="true" rows="2" maxSubmissions="1" showSubmitButton="true"/>
</View>
"""
IMAGES = 12


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("e2e-shapes")
    make_shapes(root, images=IMAGES, seed=2024, max_shapes=1, exif_fraction=0.25)
    return root


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    with LabelStudioServer(tmp_path_factory.mktemp("ls-data")) as server:
        yield server


@pytest.fixture(scope="module")
def backend(label_studio: LabelStudioServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    folder = tmp_path_factory.mktemp("backend")
    port = free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.personal_access_token,
    }
    command = serve_command(port, "--corrections", str(folder / "corrections"))
    with running_backend(command, port, folder / "serve.log", env) as url:
        yield {"url": url, "corrections": folder / "corrections", "log": folder / "serve.log"}


@pytest.fixture(scope="module")
def project(label_studio: LabelStudioServer, backend: dict, shapes: Path) -> dict:
    project_id = label_studio.create_project("minigpt e2e", LABEL_CONFIG)
    images = sorted((shapes / "images").iterdir())
    tasks = label_studio.import_images(project_id, images)
    ml_id = label_studio.connect_ml_backend(project_id, backend["url"], "minigpt-annotate", is_interactive=True)
    truth = {record.path.name: record for record in read_coco(shapes / "annotations.json").images}
    return {"id": project_id, "tasks": tasks, "ml_id": ml_id, "truth": truth}


def _pixel_box(region: dict) -> Box:
    box = value_to_box(region["value"], region["original_width"], region["original_height"])
    assert box is not None
    return box


def test_retrieved_predictions_hit_the_shapes(label_studio: LabelStudioServer, project: dict) -> None:
    started = time.perf_counter()
    answer = label_studio.retrieve_predictions(project["id"])
    elapsed = time.perf_counter() - started
    assert answer.get("processed_items") == IMAGES
    print(f"\nretrieve_tasks_predictions: {IMAGES} tasks in {elapsed:.2f} s = {IMAGES / elapsed:.1f} tasks/s")

    hits = boxes = 0
    for task in project["tasks"]:
        stored = label_studio.predictions(task["id"])
        assert len(stored) == 1, stored
        prediction = stored[0]
        assert prediction["model_version"] == "tiny-shapes"
        record = project["truth"][Path(task["source_path"]).name]
        for region in prediction["result"]:
            assert (region["original_width"], region["original_height"]) == (record.width, record.height)
            assert 0 < region["score"] <= 1
            label = region["value"]["rectanglelabels"][0]
            boxes += 1
            hits += any(a.label == label and a.box.iou(_pixel_box(region)) >= 0.5 for a in record.annotations)
    print(f"stored boxes: {boxes}, hitting a shape of their label at IoU >= 0.5: {hits}")
    assert boxes >= IMAGES // 2
    assert hits / boxes > 0.5  # most stored boxes are right (label and IoU >= 0.5)


def test_a_typed_prompt_returns_a_box(label_studio: LabelStudioServer, project: dict) -> None:
    task = project["tasks"][0]
    target = project["truth"][Path(task["source_path"]).name].annotations[0]
    context = {
        "result": [
            {
                "from_name": "prompt",
                "to_name": "image",
                "type": "textarea",
                "origin": "manual",
                "value": {"text": [target.phrase]},
            }
        ]
    }
    answer = label_studio.interactive_annotating(project["ml_id"], task["id"], context)
    regions = answer["data"]["result"]
    assert len(regions) == 1
    assert regions[0]["value"]["rectanglelabels"] == [target.label]
    assert _pixel_box(regions[0]).iou(target.box) >= 0.5


def test_a_submitted_annotation_reaches_the_coco_store(
    label_studio: LabelStudioServer, project: dict, backend: dict
) -> None:
    task = project["tasks"][1]
    record = project["truth"][Path(task["source_path"]).name]
    truth = record.annotations[0]
    region = {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "original_width": record.width,
        "original_height": record.height,
        "value": {
            "x": 100 * truth.box.x0 / record.width,
            "y": 100 * truth.box.y0 / record.height,
            "width": 100 * truth.box.width / record.width,
            "height": 100 * truth.box.height / record.height,
            "rotation": 0,
            "rectanglelabels": [truth.label],
        },
    }
    annotation = label_studio.create_annotation(task["id"], [region])
    coco_path = backend["corrections"] / "annotations.json"
    _wait_for(lambda: coco_path.exists() and json.loads(coco_path.read_text())["images"] != [])
    coco = load_with_pycocotools(coco_path)
    (image,) = coco.dataset["images"]
    assert (image["width"], image["height"]) == (record.width, record.height)
    (stored,) = read_coco(coco_path).images[0].annotations
    assert stored.label == truth.label
    assert stored.box.xyxy == pytest.approx(truth.box.xyxy, abs=0.01)
    # The store compared the submitted box with the prediction the annotator saw (what "Retrieve predictions" served
    # for the task: Label Studio's webhook leaves the annotation's `prediction` empty while the project's model
    # version is the backend's title), and recorded that prediction's model version.
    with contextlib.closing(sqlite3.connect(backend["corrections"] / "corrections.sqlite")) as db:
        ((predicted, version),) = db.execute("SELECT predicted, model_version FROM boxes").fetchall()
        served = json.loads(db.execute("SELECT boxes FROM served WHERE task_id = ?", (task["id"],)).fetchone()[0])
    kept = any(
        label == truth.label and value_to_box(value, record.width, record.height).iou(truth.box) >= 0.5  # type: ignore[union-attr]
        for label, value, _ in served
    )
    assert (predicted, version) == (int(kept), "tiny-shapes")

    # a labeller fixes the label, then deletes the annotation: the store follows both
    other = next(label for label in ("square", "circle", "triangle") if label != truth.label)
    fixed = {**region, "value": {**region["value"], "rectanglelabels": [other]}}
    label_studio.update_annotation(annotation["id"], [fixed])
    _wait_for(lambda: [a.label for a in read_coco(coco_path).images[0].annotations] == [other])
    label_studio.delete_annotation(annotation["id"])
    _wait_for(lambda: json.loads(coco_path.read_text())["images"] == [])


def _wait_for(condition, timeout: float = HANG_S) -> None:
    deadline = time.monotonic() + timeout  # webhooks may be delivered after the API call returns
    while not condition():
        assert time.monotonic() < deadline, "the webhook did not arrive"
        time.sleep(0.2)


def test_a_selection_larger_than_the_budget_is_answered_over_successive_retrievals(
    label_studio: LabelStudioServer, shapes: Path, tmp_path: Path
) -> None:
    """With a budget that only the first chunk (16 tasks) fits in, each "Retrieve predictions" stores 16 more
    predictions: the tasks left unanswered get none, so Label Studio offers them again on the next retrieval. The
    backend's log names the autolabel command that labels the rest, and it does, without a second prediction."""
    port = free_port()
    env = {
        **os.environ,
        "LABEL_STUDIO_URL": label_studio.url,
        "LABEL_STUDIO_API_KEY": label_studio.personal_access_token,
        "MINIGPT_PREDICT_BUDGET_S": "0.001",
    }
    with running_backend(serve_command(port), port, tmp_path / "serve.log", env) as url:
        project_id = label_studio.create_project("minigpt budget", LABEL_CONFIG)
        images = sorted((shapes / "images").iterdir())
        tasks = label_studio.import_images(project_id, images * 3)  # 36 tasks: three chunks of at most 16
        label_studio.connect_ml_backend(project_id, url, "minigpt-annotate", is_interactive=False)
        holding = []
        for _ in range(2):
            label_studio.retrieve_predictions(project_id)
            holding.append(sum(bool(label_studio.predictions(task["id"])) for task in tasks))
        assert holding == [16, 32]
        # the rest by the command the backend logged, run as it reads (the token from the environment)
        log_text = (tmp_path / "serve.log").read_text()
        assert "Retrieve predictions" in log_text
        command = shlex.split(log_text.split("LABEL_STUDIO_API_KEY set: ")[-1].splitlines()[0])
        assert command[:5] == ["minigpt-annotate", "autolabel", "--label-studio", label_studio.url, "--project"]
        assert command[5] == str(project_id)
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(tmp_path)
            patch.setenv("LABEL_STUDIO_API_KEY", label_studio.personal_access_token)
            assert main([*command[1:], "--quiet"]) == 0
        assert (
            json.loads((tmp_path / f"autolabel-project-{project_id}" / "summary.json").read_text())["label_studio"][
                "pushed"
            ]
            == 4
        )
        for task in tasks:  # one prediction each, never an empty placeholder for the tasks not reached
            (prediction,) = label_studio.predictions(task["id"])
            assert prediction["model_version"] == "tiny-shapes"
