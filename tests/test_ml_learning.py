"""`serve --learn`: the backend fine-tunes on the corrections its webhooks store, judges the candidate on held-out
tasks and serves it only when it does not do worse (issue 15, item 4).

Real components throughout: `minigpt-annotate serve` as a process with the shipped shapes model, the SQLite
corrections store fed through /webhook, the real `train` child running the shipped correction recipe (a few steps,
through `--set`), and the project's evaluation code. The shapes world's own boxes are the corrections; a candidate
is made worse by a labeller who swaps the labels of the training tasks (the held-out ones stay right).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from backend_process import running_backend, serve_command
from corrections_contents import corrections_contents
from hypothesis import given
from hypothesis import strategies as st
from ls_harness import LabelStudioServer, free_port
from patience import HANG_S

from minigpt_annotate.cli import main as cli
from ml_backend.learned_models import is_held_out
from model.annotations import ImageRecord
from model.calibration import load_calibration
from model.coco import read_coco
from model.scoring import DEFAULT_SCORE
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="square"/><Label value="circle"/><Label value="triangle"/></RectangleLabels></View>'
)
BASE_VERSION = SHIPPED_DIR.name
HOLDOUT = 50  # percent of tasks held out: half, so a handful of corrections gives both parts


def recipe_settings(**schedule: object) -> str:
    """MINIGPT_LEARN_ARGS that change the shipped correction recipe's schedule (`train --set`)."""
    return " ".join(f"--set stages.corrections.schedule.{field}={value}" for field, value in schedule.items())


# Training that changes the model too little to change a greedy answer: a candidate as good as the served one.
HARMLESS = recipe_settings(steps=1, batch_size=2, lr=1e-9, min_lr=0, warmup_steps=0)
# Training that takes swapped labels to heart (the recipe's replay of the base model's answers does not save it).
EAGER = recipe_settings(steps=12, batch_size=4, lr=1e-2, warmup_steps=0)
SWAPPED = {"square": "circle", "circle": "triangle", "triangle": "square"}

TRAIN_IDS = [i for i in range(1, 200) if not is_held_out(str(i), HOLDOUT)]
HELD_IDS = [i for i in range(1, 200) if is_held_out(str(i), HOLDOUT)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ImageRecord]]:
    root = tmp_path_factory.mktemp("learning-world")
    make_shapes(root, images=16, seed=15, max_shapes=2, exif_fraction=0.0)
    return root, read_coco(root / "annotations.json").images


class Backend:
    """A running `serve --learn` and the calls the tests make to it."""

    def __init__(self, url: str, world: tuple[Path, list[ImageRecord]]):
        self.url = url
        self.root, self.images = world

    def correct(self, task_id: int, image: int, labels: dict[str, str] | None = None, *, update: bool = False) -> None:
        """Post a labeller's annotation of task `task_id` (the world's image `image`): its true boxes, with labels
        renamed by `labels`."""
        record = self.images[image]
        regions = _regions(record, labels)
        task = {"id": task_id, "data": {"image": self._reference(record)}}
        event = {
            "action": "ANNOTATION_UPDATED" if update else "ANNOTATION_CREATED",
            "annotation": {"id": 10_000 + task_id, "task": task_id, "result": regions, "was_cancelled": False},
            "task": task,
            "project": {"id": 1, "label_config": CONFIG},
        }
        response = requests.post(f"{self.url}/webhook", json=event, timeout=HANG_S)
        assert response.status_code == 201, response.text

    def _reference(self, record: ImageRecord) -> str:
        return f"/data/local-files/?d={record.path.relative_to(self.root).as_posix()}"

    def predict(self) -> dict:
        tasks = [{"id": 900 + i, "data": {"image": self._reference(r)}} for i, r in enumerate(self.images[:2])]
        response = requests.post(f"{self.url}/predict", json={"tasks": tasks, "label_config": CONFIG}, timeout=HANG_S)
        response.raise_for_status()
        return response.json()

    def learning(self) -> dict:
        return requests.get(f"{self.url}/metrics", timeout=HANG_S).json()["learning"]

    def version(self) -> str:
        return requests.get(f"{self.url}/health", timeout=HANG_S).json()["model_version"]

    def wait_for(
        self, what: str, condition: Callable[[dict], bool], *, failure_expected: bool = False, known: str | None = None
    ) -> dict:
        """The learning status once `condition` holds; a failed run (unless expected, or the `known` failure) or a
        hang (nothing for HANG_S) fails with the last status."""
        deadline = time.monotonic() + HANG_S
        while time.monotonic() < deadline:
            status = self.learning()
            if condition(status):
                return status
            failure = status["last_failure"]
            assert failure_expected or failure in (None, known), f"waiting for {what}: {failure}"
            time.sleep(0.2)
        raise AssertionError(f"waited {HANG_S} s for {what}; learning status: {status}")


@contextlib.contextmanager
def serving(
    world: tuple[Path, list[ImageRecord]], corrections: Path, log: Path, *extra: str, train_args: str = HARMLESS
) -> Iterator[Backend]:
    port = free_port()
    env = {**os.environ, "LOCAL_FILES_DOCUMENT_ROOT": str(world[0]), "MINIGPT_LEARN_HOLDOUT": str(HOLDOUT),
           "MINIGPT_LEARN_ARGS": train_args}  # fmt: skip
    env.pop("LABEL_STUDIO_URL", None)
    command = serve_command(port, "--corrections", str(corrections), *extra)
    with running_backend(command, port, log, env) as url:
        yield Backend(url, world)


def _run_finished(run: int) -> Callable[[dict], bool]:
    return lambda s: (s["last_evaluation"] or {}).get("run") == run and s["state"] == "idle"


def test_a_candidate_that_does_no_worse_is_promoted_a_worse_one_is_kept_aside_and_rollback_goes_back(
    world, tmp_path: Path
) -> None:
    corrections = tmp_path / "corrections"
    learn = ("--learn", "--learn-every", "8")
    with serving(world, corrections, tmp_path / "serve-1.log", *learn) as backend:
        for n, task_id in enumerate(TRAIN_IDS[:4] + HELD_IDS[:4]):
            backend.correct(task_id, n)
        status = backend.wait_for("the run to start", lambda s: s["state"] in ("training", "evaluating"))
        assert status["runs"] == 1 and status["last_evaluation"] is None
        # /predict answers while the run trains: the answer comes before the run has finished.
        answer = backend.predict()
        assert answer["model_version"] == BASE_VERSION
        assert all(p["model_version"] == BASE_VERSION for p in answer["results"])
        assert backend.learning()["last_evaluation"] is None

        status = backend.wait_for("run 1 to finish", _run_finished(1))
        evaluation = status["last_evaluation"]
        assert evaluation["promoted"], evaluation
        assert evaluation["candidate_acceptance"] >= evaluation["serving_acceptance"]
        assert (evaluation["train_images"], evaluation["held_out_images"]) == (4, 4)
        learned = f"{BASE_VERSION}-learn-1"
        assert status["served_version"] == learned == status["last_promotion"]["version"]
        answer = backend.predict()  # new predictions come from the promoted model and say so
        assert answer["model_version"] == learned
        assert all(p["model_version"] == learned for p in answer["results"])
        assert all(p["result"] for p in answer["results"])  # and it still finds the shapes

    models = corrections / "models"
    assert json.loads((models / "v1" / "evaluation.json").read_text())["reports"]["candidate"]["overall"]
    assert (models / "v1" / "model" / "adapter_config.json").is_file()
    # its score calibration, fitted on its held-out answers, travels with it (moved with the run folder)
    assert load_calibration(models / "v1" / "model", score=DEFAULT_SCORE) is not None

    # A restart serves the promoted model; this labeller swaps the labels of every training task.
    with serving(world, corrections, tmp_path / "serve-2.log", *learn, train_args=EAGER) as backend:
        assert backend.version() == learned
        for n, task_id in enumerate(TRAIN_IDS[:4]):
            backend.correct(task_id, n, SWAPPED, update=True)
        for n, task_id in enumerate(TRAIN_IDS[4:8], start=8):
            backend.correct(task_id, n, SWAPPED)
        status = backend.wait_for("run 2 to finish", _run_finished(2))
        evaluation = status["last_evaluation"]
        assert not evaluation["promoted"], evaluation
        assert evaluation["candidate_acceptance"] < evaluation["serving_acceptance"]
        assert evaluation["serving_version"] == learned and evaluation["train_images"] == 8
        assert backend.version() == learned and backend.predict()["model_version"] == learned
    kept = json.loads((models / "v2" / "evaluation.json").read_text())  # the rejected candidate, for inspection
    assert not kept["promoted"] and (models / "v2" / "model" / "adapter_config.json").is_file()

    with serving(world, corrections, tmp_path / "serve-3.log", "--rollback") as backend:
        assert backend.version() == BASE_VERSION  # the model before learn-1: the base
        assert backend.predict()["model_version"] == BASE_VERSION
    assert json.loads((models / "state.json").read_text())["served"] == []
    assert (models / "v1" / "model").is_dir()  # rolled back from, not deleted


def _store_rows(corrections: Path) -> dict[str, object]:
    """The store's database rows and files, without the learning folder inside it, and without the record of what
    /predict served (each /predict rewrites it, by design)."""
    contents = {k: v for k, v in corrections_contents(corrections).items() if not k.startswith("models/")}
    rows = contents.get("rows")
    if isinstance(rows, list):
        contents["rows"] = [row for row in rows if not str(row).startswith('INSERT INTO "served"')]
    return contents


def test_killing_the_training_leaves_the_served_model_and_the_store_intact_and_the_next_run_works(
    world, tmp_path: Path
) -> None:
    corrections = tmp_path / "corrections"
    learn = ("--learn", "--learn-every", "4")
    # A checkpoint after every step, so the kill lands mid-training.
    slow_harmless = f"{HARMLESS} {recipe_settings(steps=4)} --set save_every=1"
    with serving(world, corrections, tmp_path / "serve.log", *learn, train_args=slow_harmless) as backend:
        for n, task_id in enumerate(TRAIN_IDS[:2] + HELD_IDS[:2]):
            backend.correct(task_id, n)
        status = backend.wait_for("the training process", lambda s: s["state"] == "training" and s["training_pid"])
        candidate = corrections / "models" / ".tmp-v1" / "model"
        backend.wait_for("a first checkpoint", lambda _: any(candidate.rglob("step-*")))
        before = _store_rows(corrections)
        os.killpg(status["training_pid"], signal.SIGKILL)  # between two steps' checkpoints, or while writing one

        status = backend.wait_for(
            "the run to fail", lambda s: s["state"] == "idle" and s["last_failure"], failure_expected=True
        )
        assert "killed by signal 9" in status["last_failure"]
        assert status["served_version"] == BASE_VERSION and status["last_promotion"] is None
        assert backend.predict()["model_version"] == BASE_VERSION
        assert _store_rows(corrections) == before
        with contextlib.closing(sqlite3.connect(f"file:{corrections / 'corrections.sqlite'}?mode=ro", uri=True)) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert (corrections / "models" / "v1.failed" / "train.log").is_file()  # kept for its log
        assert not (corrections / "models" / "v1").exists()

        for n, task_id in enumerate(TRAIN_IDS[2:4] + HELD_IDS[2:4], start=4):
            backend.correct(task_id, n)
        status = backend.wait_for("run 2 to finish", _run_finished(2), known=status["last_failure"])
        assert status["last_evaluation"]["promoted"] and status["last_failure"] is None
        assert backend.predict()["model_version"] == f"{BASE_VERSION}-learn-2"


@given(st.integers(min_value=1, max_value=10**9), st.integers(min_value=1, max_value=50))
def test_a_task_is_held_out_or_not_for_good(task_id: int, percent: int) -> None:
    assert is_held_out(str(task_id), percent) == is_held_out(str(task_id), percent)
    assert not is_held_out(str(task_id), percent) or is_held_out(str(task_id), 50)  # a bigger slice holds it too


def test_the_held_out_slice_is_about_its_share() -> None:
    held = sum(is_held_out(str(i), 20) for i in range(1, 10_001))
    assert 1800 < held < 2200  # 20 % of 10,000 tasks; the binomial standard deviation is 40


@pytest.mark.parametrize(
    ("argv", "cause"),
    [
        (["--learn"], "--learn needs --corrections DIR"),
        (["--rollback"], "--rollback needs --corrections DIR"),
    ],
)
def test_learning_without_a_store_is_refused_in_one_line(argv, cause, capsys) -> None:
    assert cli(["serve", "--model", str(SHIPPED_DIR), "--device", "cpu", *argv]) == 1
    assert cause in capsys.readouterr().err


def test_rollback_with_nothing_promoted_is_refused_in_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "corrections").mkdir()
    assert (
        cli(["serve", "--model", str(SHIPPED_DIR), "--corrections", str(tmp_path / "corrections"), "--rollback"]) == 1
    )
    assert "nothing to roll back" in capsys.readouterr().err


@pytest.mark.slow
def test_label_studio_corrections_train_a_model_whose_version_appears_on_new_predictions(tmp_path: Path) -> None:
    """Against Label Studio 1.23.2: 40 tasks corrected through its API reach the backend by webhook, a run starts by
    itself, and "Retrieve predictions" on other tasks stores predictions of the promoted model's version."""
    shapes = tmp_path / "shapes"
    make_shapes(shapes, images=44, seed=40, max_shapes=2, exif_fraction=0.0)
    truth = {record.path.name: record for record in read_coco(shapes / "annotations.json").images}
    with LabelStudioServer(tmp_path / "ls") as ls:
        port = free_port()
        env = {**os.environ, "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.personal_access_token,
               "MINIGPT_LEARN_ARGS": HARMLESS}  # fmt: skip
        env.pop("LOCAL_FILES_DOCUMENT_ROOT", None)
        command = serve_command(port, "--corrections", str(tmp_path / "corrections"), "--learn", "--learn-every", "40")
        with running_backend(command, port, tmp_path / "serve.log", env) as url:
            project = ls.create_project("learning", CONFIG)
            tasks = ls.import_images(project, sorted((shapes / "images").iterdir()))
            ls.connect_ml_backend(project, url, "minigpt-annotate")
            for task in tasks[:40]:
                record = truth[Path(task["source_path"]).name]
                ls.create_annotation(task["id"], _regions(record))
            backend = Backend(url, (shapes, []))
            status = backend.wait_for("the run Label Studio's corrections start", _run_finished(1))
            evaluation = status["last_evaluation"]
            assert evaluation["promoted"], evaluation
            assert evaluation["train_images"] + evaluation["held_out_images"] == 40 and evaluation["held_out_images"]
            learned = f"{BASE_VERSION}-learn-1"
            assert status["served_version"] == learned

            later = [task["id"] for task in tasks[40:]]
            ls.retrieve_predictions(project, later)
            for task_id in later:
                (prediction,) = ls.predictions(task_id)
                assert prediction["model_version"] == learned and prediction["result"]


def _regions(record: ImageRecord, labels: dict[str, str] | None = None) -> list[dict]:
    """A labeller's annotation of `record` as Label Studio stores it: its true boxes in percent, with labels renamed
    by `labels`."""
    regions = []
    for n, a in enumerate(record.annotations):
        value = {"x": 100 * a.box.x0 / record.width, "y": 100 * a.box.y0 / record.height,
                 "width": 100 * a.box.width / record.width, "height": 100 * a.box.height / record.height,
                 "rotation": 0, "rectanglelabels": [(labels or {}).get(a.label, a.label)]}  # fmt: skip
        regions.append({"id": f"r{n}", "from_name": "label", "to_name": "image", "type": "rectanglelabels",
                        "original_width": record.width, "original_height": record.height, "value": value})  # fmt: skip
    return regions
