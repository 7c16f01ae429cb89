"""`autolabel --label-studio URL --project ID` against a real Label Studio 1.23.2 (own venv, see tests/ls_harness.py):
a project's tasks answered by the shipped shapes model, predictions pushed and stored with the model version, a
rerun that adds nothing, --overwrite that replaces, and an unreachable Label Studio or a wrong token refused in one
line before anything is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from ls_harness import LabelStudioServer, free_port
from same_answers import assert_same_proposals

from minigpt_annotate.cli import main
from model.coco import load_with_pycocotools
from model.regions import value_to_box
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR

pytestmark = pytest.mark.slow

LABEL_CONFIG = """
<View>
  <Image name="picture" value="$photo"/>
  <RectangleLabels name="shape" toName="picture">
    <Label value="Square" prompt="square"/><Label value="Circle" predicted_values="circle"/><Label value="triangle"/>
  </RectangleLabels>
</View>
"""
IMAGES = 30
VERSION = SHIPPED_DIR.name  # autolabel's default model version: the model folder's name


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    with LabelStudioServer(tmp_path_factory.mktemp("ls-data")) as server:
        yield server


@pytest.fixture(scope="module")
def project(label_studio: LabelStudioServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    shapes = tmp_path_factory.mktemp("shapes")
    make_shapes(shapes, images=IMAGES, seed=77, max_shapes=2)
    project_id = label_studio.create_project("autolabel e2e", LABEL_CONFIG)
    uploaded = label_studio.import_images(project_id, sorted((shapes / "images").iterdir()))
    assert all(task["data"]["photo"].startswith("/data/upload/") for task in uploaded)  # the config's image key
    # one task whose image Label Studio does not have: a failure of that task, never a stopped run
    missing = label_studio.request(
        "POST",
        f"/api/projects/{project_id}/import",
        params={"return_task_ids": "true"},
        json=[{"photo": f"/data/upload/{project_id}/no-such-image.png"}],
    ).json()["task_ids"][0]
    return {"id": project_id, "images": [t["id"] for t in uploaded], "missing": int(missing)}


def _run(url: str, project_id: int, out: Path, *extra: str, token: str) -> int:
    argv = [
        "autolabel",
        "--label-studio",
        url,
        "--project",
        str(project_id),
        "--model",
        str(SHIPPED_DIR),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--quiet",
        *extra,
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LABEL_STUDIO_API_KEY", token)
        patch.delenv("LABEL_STUDIO_URL", raising=False)
        return main(argv)


def _label(label_studio: LabelStudioServer, project: dict, out: Path, *extra: str) -> int:
    return _run(label_studio.url, project["id"], out, *extra, token=label_studio.personal_access_token)


def _predictions(label_studio: LabelStudioServer, project: dict) -> dict[int, list[dict]]:
    return {int(task["id"]): task["predictions"] for task in label_studio.tasks(project["id"])}


def test_a_project_is_labelled_pushed_and_a_rerun_adds_nothing(
    label_studio: LabelStudioServer, project: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert _label(label_studio, project, out) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["label_studio"]["pushed"] == IMAGES and summary["label_studio"]["already_predicted"] == 0
    assert (summary["answered"], summary["failed"], summary["pending"]) == (IMAGES, 1, 0)

    stored = _predictions(label_studio, project)
    tasks = {int(t["id"]): t for t in label_studio.tasks(project["id"])}
    boxes = 0
    for task_id in project["images"]:
        [prediction] = stored[task_id]  # exactly one, made by this model version
        assert prediction["model_version"] == VERSION
        assert VERSION in tasks[task_id]["predictions_model_versions"]  # the Data Manager's column
        for region in prediction["result"]:
            assert (region["from_name"], region["to_name"]) == ("shape", "picture")  # the project's names
            assert region["value"]["rectanglelabels"][0] in {"Square", "Circle", "triangle"}
            box = value_to_box(region["value"], region["original_width"], region["original_height"])
            assert box is not None and box.width > 0 and box.height > 0
            boxes += 1
    assert boxes >= IMAGES  # the shipped model finds shapes on shape scenes
    assert stored[project["missing"]] == []  # nothing pushed for the image that could not be read
    [failure] = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    assert failure["key"] == f"task {project['missing']}" and "no-such-image.png" in failure["image"]
    coco = load_with_pycocotools(out / "proposals.coco.json")
    assert len(coco.getImgIds()) == IMAGES and len(coco.getAnnIds()) == boxes
    assert all(image["file_name"].startswith(f"/data/upload/{project['id']}/") for image in coco.dataset["images"])

    # the same command again, and a fresh output folder: nothing is asked or pushed twice
    for again in (out, tmp_path / "fresh"):
        assert _label(label_studio, project, again) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["label_studio"]["pushed"] == 0
        assert summary["label_studio"]["already_predicted"] == IMAGES
        assert summary["this_run"]["images"] == (0 if again == out else 1)  # only the unreadable task is retried
    assert _predictions(label_studio, project) == stored

    # --overwrite replaces this version's predictions: still one per task, new ones; on the Ray engine, whose decode
    # tasks fetch the images from Label Studio under the same rules, with the same answers as the local engine
    ray = ("--engine", "ray", "--actors", "1")
    assert _label(label_studio, project, tmp_path / "overwrite", "--overwrite", *ray) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["label_studio"]["replaced"] == IMAGES
    replaced = _predictions(label_studio, project)
    for task_id in project["images"]:
        [prediction] = replaced[task_id]
        assert prediction["id"] != stored[task_id][0]["id"]
        assert_same_proposals(prediction, stored[task_id][0], ignore={"id", "created_at", "updated_at", "created_ago"})


@pytest.mark.parametrize("case", ["unreachable", "wrong token", "no such project"])
def test_a_project_that_cannot_be_read_is_one_line_and_writes_nothing(
    case: str, label_studio: LabelStudioServer, project: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    if case == "unreachable":  # a port nothing listens on
        code = _run(f"http://127.0.0.1:{free_port()}", project["id"], out, token="any-token-123456")
        expected = "cannot reach"
    elif case == "wrong token":
        code = _run(label_studio.url, project["id"], out, token="not-the-token-0123456789")
        expected = "refused the token"
    else:
        code = _run(label_studio.url, 9999, out, token=label_studio.personal_access_token)
        expected = "no project 9999"
    assert code == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("minigpt-annotate: error: ") and "\n" not in error, error
    assert expected in error and ";" in error  # the cause; then the fix
    assert "not-the-token" not in error and label_studio.personal_access_token not in error
    assert not out.exists()
