"""The corrections store behind `/webhook` (ml_backend/corrections.py): cost per event, crash safety, concurrency, and
the webhook payloads it refuses. Real Flask app, real tiny shapes model, real SQLite, real child processes killed
with SIGKILL; images from a local-files root or a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from corrections_contents import corrections_contents
from hypothesis import given, settings
from hypothesis import strategies as st
from patience import HANG_S
from PIL import Image

from label_studio_access.media import MediaFetcher, MediaSettings
from ml_backend.backend import MiniGPTBackend
from ml_backend.corrections import CorrectionStore
from ml_backend.server import create_app
from ml_backend.settings import load_proposer
from model.coco import load_with_pycocotools, read_coco
from model.errors import MiniGPTError
from model.regions import value_to_box
from model.synthetic.shapes_model import SHIPPED_DIR

CHILD = Path(__file__).with_name("corrections_store_child.py")
CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="square"/><Label value="circle"/><Label value="triangle"/>
  </RectangleLabels>
  <TextArea name="prompt" toName="image" editable="true"/>
</View>
"""
SIZE = (64, 48)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("media")
    for i in range(4):
        Image.new("RGB", SIZE, (60 * i, 90, 200)).save(root / f"img-{i}.png")
    return root


def _client(store: CorrectionStore, media: Path, **media_settings: Any):
    fetcher = MediaFetcher(MediaSettings(local_files_root=media, **media_settings))
    backend = MiniGPTBackend(load_proposer(str(SHIPPED_DIR), "cpu"), fetcher, corrections=store)
    return create_app(backend).test_client()


def _region(label: object, x: float = 10.0, **value: Any) -> dict:
    return {
        "from_name": "label",
        "to_name": "image",
        "type": "rectanglelabels",
        "value": {"x": x, "y": 10.0, "width": 20.0, "height": 30.0, "rotation": 0, "rectanglelabels": [label], **value},
    }


def _event(action: str, annotation_id: object, task_id: object, result: object, image: str | None = None) -> dict:
    image = image or f"/data/local-files/?d=img-{len(str(task_id)) % 4}.png"
    return {
        "action": action,
        "annotation": {"id": annotation_id, "task": task_id, "result": result, "was_cancelled": False},
        "task": {"id": task_id, "project": 1, "data": {"image": image}},
        "project": {"id": 1, "label_config": CONFIG},
    }


def _deleted(ids: list[int]) -> dict:
    return {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": i} for i in ids], "project": {"id": 1}}


def _seed_version_1_state(root: Path, tasks: int) -> None:
    """The store's earlier format (state.json), which the SQLite store imports: `tasks` tasks, 3 boxes each."""
    boxes = [{"label": label, "bbox": [1.0, 2.0, 20.0, 30.0]} for label in ("square", "circle", "triangle")]
    state = {
        "version": 1,
        "categories": ["square", "circle", "triangle"],
        "tasks": {
            str(t): {"image": f"images/task-{t}.png", "width": SIZE[0], "height": SIZE[1], "source": "s3://b/x.png",
                     "annotations": {str(10_000 + t): boxes}}
            for t in range(1, tasks + 1)
        },
    }  # fmt: skip
    (root / "images").mkdir(parents=True)
    (root / "state.json").write_text(json.dumps(state))


def _bytes_written_by_this_thread() -> int:
    """Bytes this thread has passed to write(2) so far (Linux): the request runs in it, a background export not."""
    fields = dict(line.split(": ") for line in Path("/proc/thread-self/io").read_text().splitlines())
    return int(fields["wchar"])


def _written(client, body: dict) -> int:
    before = _bytes_written_by_this_thread()
    response = client.post("/webhook", json=body)
    assert response.status_code == 201, response.get_data(as_text=True)
    return _bytes_written_by_this_thread() - before


# --- issue 13 item 7: a webhook costs O(change) -----------------------------------------------------------------------
def test_one_webhook_writes_as_much_with_3000_tasks_stored_as_with_100(media: Path, tmp_path: Path) -> None:
    written: dict[int, dict[str, int]] = {}
    for tasks in (100, 3000):
        _seed_version_1_state(tmp_path / str(tasks), tasks)
        client = _client(CorrectionStore(tmp_path / str(tasks)), media)
        written[tasks] = {
            "updated": _written(
                client, _event("ANNOTATION_UPDATED", 10_005, 5, [_region("square"), _region("circle")])
            ),
            "created": _written(client, _event("ANNOTATION_CREATED", 20_000, 99_999, [_region("triangle")])),
            "deleted": _written(client, _deleted([10_007])),
        }
    # Whole-store rewrites wrote ~30x more at 3000 tasks (state.json and annotations.json: 2.2 s per event at 10k);
    # now each event writes its own rows (a few SQLite pages) whatever the store holds.
    for kind, small in written[100].items():
        assert written[3000][kind] <= small + 16_384, written


def test_a_delete_listing_300_unknown_ids_writes_nothing(media: Path, tmp_path: Path) -> None:
    _seed_version_1_state(tmp_path, 100)
    client = _client(CorrectionStore(tmp_path), media)
    before = _bytes_written_by_this_thread()
    response = client.post("/webhook", json=_deleted(list(range(50_000, 50_300))))
    assert (response.status_code, response.get_json()["removed"]) == (201, 0)
    assert _bytes_written_by_this_thread() - before < 4096  # was a full rewrite per id: 76 s in the attack


def test_annotations_json_catches_up_by_itself(media: Path, tmp_path: Path) -> None:
    store = CorrectionStore(tmp_path)
    client = _client(store, media)
    assert client.post("/webhook", json=_event("ANNOTATION_CREATED", 7, 3, [_region("circle")])).status_code == 201
    _wait_for(lambda: len(load_with_pycocotools(store.coco_path).dataset["annotations"]) == 1)  # no export() asked


def test_an_earlier_versions_state_is_imported_once_and_kept_aside(tmp_path: Path) -> None:
    _seed_version_1_state(tmp_path, 5)
    state = json.loads((tmp_path / "state.json").read_text())
    state["tasks"]["True"] = state["tasks"]["1"]  # what the old store wrote for task id `true`: skipped
    state["tasks"]["2"]["annotations"]["10002"].append({"label": " ", "bbox": [1, 1, 2, 2]})  # item 2's poison
    state["tasks"]["6"] = {**state["tasks"]["3"], "image": "images/../../outside.png"}  # never deleted by an export
    (tmp_path / "state.json").write_text(json.dumps(state))
    coco = load_with_pycocotools(CorrectionStore(tmp_path).coco_path)
    assert (len(coco.dataset["images"]), len(coco.dataset["annotations"])) == (5, 15)  # all but the invalid
    assert not (tmp_path / "state.json").exists() and (tmp_path / "state.v1.json").exists()
    assert len(load_with_pycocotools(CorrectionStore(tmp_path).coco_path).dataset["images"]) == 5  # imported once


def _wait_for(condition, timeout: float = HANG_S) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "annotations.json did not catch up"
        time.sleep(0.05)


# --- issue 13 item 4: a slow download holds up no other webhook ---------------------------------------------------
class _SlowImage(http.server.BaseHTTPRequestHandler):
    """Sends the headers and one byte of a PNG, then the rest only once `release` is set."""

    payload: bytes = b""
    requested = threading.Event()
    release = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload[:1])
        self.wfile.flush()
        type(self).requested.set()
        type(self).release.wait(HANG_S)
        self.wfile.write(self.payload[1:])

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def slow_server() -> Iterator[tuple[str, type[_SlowImage]]]:
    buffer = io.BytesIO()
    Image.new("RGB", SIZE, (1, 2, 3)).save(buffer, "PNG")
    handler = type("Slow", (_SlowImage,), {"payload": buffer.getvalue(), "requested": threading.Event(),
                                           "release": threading.Event()})  # fmt: skip
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        handler.release.set()
        httpd.shutdown()


def test_a_slow_image_download_holds_up_no_other_webhook(media: Path, tmp_path: Path, slow_server) -> None:
    url, handler = slow_server
    store = CorrectionStore(tmp_path)
    client = _client(store, media, allowed_hosts=frozenset({"127.0.0.1"}), timeout_s=HANG_S)
    answers: dict[str, int] = {}

    def post(name: str, body: dict) -> None:
        answers[name] = client.post("/webhook", json=body).status_code

    slow = threading.Thread(
        target=post, args=("slow", _event("ANNOTATION_CREATED", 1, 1, [_region("square")], f"{url}/slow.png"))
    )
    slow.start()
    assert handler.requested.wait(HANG_S)  # the slow webhook is now inside its download
    quick = threading.Thread(target=post, args=("quick", _event("ANNOTATION_CREATED", 2, 2, [_region("circle")])))
    quick.start()
    quick.join(HANG_S)  # before the fix it waited for the store's lock, which the download held
    finished_while_downloading = not quick.is_alive() and not handler.release.is_set()
    handler.release.set()
    slow.join(HANG_S)
    assert finished_while_downloading
    assert answers == {"quick": 201, "slow": 201}
    assert len(read_coco(store.export()).images) == 2


# --- issue 13 item 18: webhook payloads of the wrong shape are 400s, unknown labels 422s ----------------------------
MALFORMED = {
    "result is an object": ({"0": _region("square")}, "annotation.result: Input should be a valid list"),
    "an item is a string": (["square"], "each result item must be a JSON object"),
    "rotation is a string": ([_region("square", rotation="45deg")], "rotation: Input should be a valid number"),
    "labels are a string": ([{**_region("x"), "value": {**_region("x")["value"], "rectanglelabels": "circle"}}],
                            "rectanglelabels: Input should be a valid list"),  # was stored as the label "c"
    "x is Infinity": ([_region("square", x=float("inf"))], "x: Input should be a finite number"),
}  # fmt: skip


@pytest.fixture(scope="module")
def shared(media: Path, tmp_path_factory: pytest.TempPathFactory):
    store = CorrectionStore(tmp_path_factory.mktemp("shared-store"))
    client = _client(store, media)
    assert client.post("/webhook", json=_event("ANNOTATION_CREATED", 1, 1, [_region("square")])).status_code == 201
    store.export()
    return store, client


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_webhook_is_a_400_naming_the_field_and_changes_nothing(shared, case: str) -> None:
    store, client = shared
    result, expected = MALFORMED[case]
    before = corrections_contents(store.root)
    response = client.post("/webhook", json=_event("ANNOTATION_UPDATED", 1, 1, result))
    assert response.status_code == 400, response.get_data(as_text=True)  # was a 500, or a wrong label stored
    assert expected in response.get_json()["error"]
    assert corrections_contents(store.root) == before


@pytest.mark.parametrize("task_id", [True, -5, 0, "7", 1.0])
def test_a_task_id_that_is_not_a_label_studio_id_is_refused(shared, task_id: object) -> None:
    store, client = shared
    before = corrections_contents(store.root)
    response = client.post("/webhook", json=_event("ANNOTATION_CREATED", 2, task_id, [_region("circle")]))
    assert response.status_code == 400, response.get_data(as_text=True)  # `true` was stored as task "True"
    assert "task.id" in response.get_json()["error"]
    assert corrections_contents(store.root) == before  # no images/task--5.png, no images/task-True.png


def test_a_label_outside_the_projects_config_is_refused_with_its_annotation(shared) -> None:
    store, client = shared
    before = corrections_contents(store.root)
    result = [_region("circle"), _region("dog")]
    response = client.post("/webhook", json=_event("ANNOTATION_UPDATED", 1, 1, result))
    assert response.status_code == 422
    assert "label 'dog' is not one of the project's labels (circle, square, triangle)" in response.get_json()["error"]
    assert corrections_contents(store.root) == before  # "dog" did not become a COCO category
    assert "dog" not in {c["name"] for c in load_with_pycocotools(store.export()).dataset["categories"]}


def test_a_blank_label_that_reaches_the_store_is_refused_and_changes_nothing(shared, media: Path) -> None:
    store, _ = shared  # the webhook refuses it first (not a configured label); the store checks on its own too
    before = corrections_contents(store.root)
    for task_id in (1, 77):  # a stored task, and a new one whose image must not be copied
        with pytest.raises(MiniGPTError, match="annotation 3: label ' ' cannot be stored"):
            store.save(task_id, 3, [("circle", _region("circle")["value"]), (" ", _region(" ")["value"])],
                       source="img-0.png", fetch_image=(media / "img-0.png").read_bytes)  # fmt: skip
        assert corrections_contents(store.root) == before


_json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8), st.just("square")
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
_values = st.fixed_dictionaries(
    {}, optional={k: _json for k in ("x", "y", "width", "height", "rotation", "rectanglelabels")}
)


def _mostly(usual: st.SearchStrategy, odd: st.SearchStrategy) -> st.SearchStrategy:
    return st.integers(0, 9).flatmap(lambda k: usual if k < 8 else odd)


_labels = st.lists(
    _mostly(st.sampled_from(["square", "circle"]), st.sampled_from(["dog", " ", ""])), min_size=1, max_size=2
)
_real_rectangles = st.builds(  # a real rectangle with one field changed, or none
    lambda geometry, labels, key, odd: (lambda r: r["value"].update({key: odd}) or r)(
        _region("square", **geometry, rectanglelabels=labels)
    ),
    st.fixed_dictionaries({k: st.floats(-50, 150) for k in ("x", "y", "width", "height", "rotation")}),
    _labels,
    _mostly(st.just("unused"), st.sampled_from(["x", "y", "width", "height", "rotation", "rectanglelabels"])),
    _mostly(st.floats(-50, 150), _json),
)
_rectangles = _mostly(_real_rectangles, st.builds(lambda value: {**_region("square"), "value": value}, _values))
_results = _mostly(st.lists(_rectangles, min_size=1, max_size=3), st.lists(st.one_of(_json, _rectangles)) | _json)


@settings(max_examples=150, derandomize=True, database=None)
@given(
    task_id=_mostly(st.integers(1, 6), st.one_of(st.integers(-2, 0), _json)),  # mostly well-formed: mostly stored
    annotation_id=_mostly(st.integers(1, 6), st.one_of(st.integers(-2, 0), _json)),
    result=_results,
    action=st.sampled_from(["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED", "ANNOTATIONS_DELETED"]),
)  # fmt: skip
def test_no_webhook_is_a_server_error_and_the_store_stays_valid(shared, task_id, annotation_id, result, action) -> None:
    store, client = shared
    body = _event(action, annotation_id, task_id, result)
    if action == "ANNOTATIONS_DELETED":
        body["annotations"] = result
    response = client.post("/webhook", json=body)
    assert response.status_code in (201, 400, 422), response.get_data(as_text=True)
    assert response.get_json()["error" if response.status_code >= 400 else "status"]
    coco = load_with_pycocotools(store.export())  # still a COCO file finetune reads, with only configured labels
    assert {c["name"] for c in coco.dataset["categories"]} <= {"square", "circle", "triangle"}
    names = {image["file_name"] for image in coco.dataset["images"]}
    assert all(name.split("task-")[1].split(".")[0].isdigit() for name in names)
    assert names == {f"images/{p.name}" for p in (store.root / "images").iterdir()}


@settings(max_examples=300, derandomize=True, database=None)
@given(
    value=st.one_of(
        _values,
        _json,
        _real_rectangles.map(lambda region: region["value"]),
        st.fixed_dictionaries({k: st.floats() for k in ("x", "y", "width", "height", "rotation")}),  # inf, nan
    ),
    width=st.integers(1, 5000),
    height=st.integers(1, 5000),
)
def test_value_to_box_never_raises_and_stays_inside_the_image(value, width: int, height: int) -> None:
    box = value_to_box(value, width, height) if isinstance(value, dict) else None
    if box is not None:
        assert 0 <= box.x0 < box.x1 <= width and 0 <= box.y0 < box.y1 <= height


# --- crash safety: kill -9 anywhere keeps every acknowledged webhook ----------------------------------------------
def _run_child(store: Path, mode: str, ops: int, seed: int, worker: int = 0) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(CHILD), str(store), mode, str(ops), str(seed), str(worker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines(proc: subprocess.Popen, expected_rc: int) -> list[dict]:
    out, err = proc.communicate(timeout=HANG_S)
    assert proc.returncode == expected_rc, (proc.returncode, err[-2000:])
    return [json.loads(line) for line in out.split("\n")[:-1]]  # a line cut by the kill has no newline


def _replayed(lines: list[dict]) -> tuple[dict[int, list], dict | None]:
    """The dataset the acknowledged operations make (task → latest annotation's boxes), and the one in flight."""
    tasks: dict[int, dict[int, list]] = {}
    done = {line["index"] for line in lines if line["kind"] == "done"}
    in_flight = None
    for line in lines:
        if line["kind"] != "begin":
            continue
        if line["index"] not in done:
            in_flight = line
            continue
        _apply(tasks, line)
    return tasks, in_flight


def _apply(tasks: dict[int, dict[int, list]], op: dict) -> None:
    removing = op["ids"] if op["op"] == "delete" else [op["annotation"]]
    for task_id, stored in list(tasks.items()):
        for annotation_id in removing:
            stored.pop(annotation_id, None)
        if not stored and (op["op"] == "delete" or task_id != op["task"]):
            del tasks[task_id]
    if op["op"] == "save":
        width, height = 40 + op["task"] % 7, 30 + op["task"] % 5  # the child's image sizes
        boxes = [(label, value_to_box(value, width, height)) for label, value in op["regions"]]
        tasks.setdefault(op["task"], {})[op["annotation"]] = [(label, box.xyxy) for label, box in boxes if box]


def _dataset(tasks: dict[int, dict[int, list]]) -> dict[int, list]:
    return {task_id: list(stored.values())[-1] for task_id, stored in tasks.items()}


def _stored(root: Path) -> dict[int, list]:
    """What a reopened store exports, by task id, checked by pycocotools; and its image copies are exactly those."""
    store = CorrectionStore(root)
    load_with_pycocotools(store.coco_path)
    dataset = read_coco(store.coco_path)
    store.close()
    names = {record.path.name for record in dataset.images}
    assert names == {p.name for p in (root / "images").iterdir()}  # no copy missing, none left over
    return {
        int(record.path.stem.removeprefix("task-")): [(a.label, a.box.xyxy) for a in record.annotations]
        for record in dataset.images
    }


def _same(stored: dict[int, list], expected: dict[int, list]) -> bool:
    def rounded(d: dict[int, list]) -> dict[int, list]:
        return {k: [(label, tuple(round(v, 6) for v in xyxy)) for label, xyxy in boxes] for k, boxes in d.items()}

    return rounded(stored) == rounded(expected)


@pytest.mark.parametrize("seed", range(4))
def test_kill_9_at_a_random_moment_keeps_every_acknowledged_webhook(tmp_path: Path, seed: int) -> None:
    lines = _lines(_run_child(tmp_path / "store", "timer", 0, seed), -signal.SIGKILL)
    tasks, in_flight = _replayed(lines)
    assert sum(line["kind"] == "done" for line in lines) >= 5, "killed before the burst got going"
    stored = _stored(tmp_path / "store")
    options = [_dataset(tasks)]
    if in_flight is not None:  # committed, then killed before it was acknowledged: either is right
        _apply(tasks, in_flight)
        options.append(_dataset(tasks))
    assert any(_same(stored, option) for option in options), (stored, options)


def test_kill_9_inside_a_transaction_keeps_neither_its_rows_nor_its_image_copy(tmp_path: Path) -> None:
    lines = _lines(_run_child(tmp_path / "store", "in_transaction", 15, 7), -signal.SIGKILL)
    tasks, in_flight = _replayed(lines)
    assert in_flight is not None and in_flight["task"] == 500
    assert _same(_stored(tmp_path / "store"), _dataset(tasks))  # and images/task-500.png is gone (checked there)


def test_kill_9_during_an_export_is_repaired_when_the_store_opens(tmp_path: Path) -> None:
    lines = _lines(_run_child(tmp_path / "store", "in_export", 15, 3), -signal.SIGKILL)
    tasks, in_flight = _replayed(lines)
    assert in_flight is None and 500 in tasks  # the save was acknowledged; its export died
    assert _same(_stored(tmp_path / "store"), _dataset(tasks))


def test_three_processes_writing_one_store_lose_nothing(tmp_path: Path) -> None:
    children = [_run_child(tmp_path / "store", "burst", 30, 11 + worker, worker) for worker in range(3)]
    tasks: dict[int, dict[int, list]] = {}
    for child in children:
        tasks.update(_replayed(_lines(child, 0))[0])  # each worker has its own task and annotation ids
    assert _same(_stored(tmp_path / "store"), _dataset(tasks))


# ======================================================================================================================
# Provenance: which corrected boxes a model predicted, and acceptance per model version (issue 16)


def _predicted(model_version: str, *regions: dict) -> dict:
    """The annotation's `prediction` as Label Studio 1.23.2 fills it when an annotation is saved (tasks/api.py: the
    task's prediction of the project's model version, through PredictionSerializer) and sends it in the webhook."""
    return {"id": 40, "task": 1, "project": 1, "model_version": model_version, "score": 0.5, "result": list(regions),
            "created_at": "2026-11-29T12:00:00Z"}  # fmt: skip


def _with(region: dict, origin: str, score: float | None = None) -> dict:
    return {**region, "origin": origin, **({"score": score} if score is not None else {})}


def test_corrected_predictions_record_their_model_version_and_evaluate_store_counts_acceptance(
    media: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from minigpt_annotate.cli import main

    root = tmp_path / "corrections"
    store = CorrectionStore(root)
    client = _client(store, media)
    # Task 1: the model (v1) predicted a square, a circle and a triangle. The annotator kept the square, moved the
    # circle a little, deleted the triangle and drew a square of their own.
    first = _event(
        "ANNOTATION_CREATED", 1, 1,
        [_with(_region("square", 10), "prediction"), _with(_region("circle", 52), "prediction-changed"),
         _with(_region("square", 75, y=60.0), "manual")],
    )  # fmt: skip
    first["annotation"]["prediction"] = _predicted(
        "tiny-v1", _with(_region("square", 10), "prediction", 0.8), _with(_region("circle", 50), "prediction", 0.6),
        _with(_region("triangle", 75), "prediction", 0.3),
    )  # fmt: skip
    # Task 2: the model (v2) predicted a square where the annotator saw a circle: relabelled, so not kept.
    second = _event("ANNOTATION_CREATED", 2, 22, [_with(_region("circle", 10), "prediction-changed")])
    second["annotation"]["prediction"] = _predicted("tiny-v2", _with(_region("square", 10), "prediction", 0.9))
    # Task 3: no prediction seen (Label Studio sends `{}`): nothing to say about acceptance.
    third = _event("ANNOTATION_CREATED", 3, 333, [_region("triangle", 30)])
    third["annotation"]["prediction"] = {}
    for body in (first, second, third):
        assert client.post("/webhook", json=body).status_code == 201
    store.close()

    with sqlite3.connect(root / "corrections.sqlite") as db:
        boxes = db.execute(
            "SELECT annotation_id, label, origin, predicted, model_version FROM boxes ORDER BY annotation_id, position"
        ).fetchall()
        predictions = db.execute(
            "SELECT annotation_id, label, model_version, kept FROM predictions ORDER BY annotation_id, position"
        ).fetchall()
    db.close()
    assert boxes == [
        (1, "square", "prediction", 1, "tiny-v1"),
        (1, "circle", "prediction-changed", 1, "tiny-v1"),
        (1, "square", "manual", 0, "tiny-v1"),  # drawn, with tiny-v1's prediction in view
        (2, "circle", "prediction-changed", 0, "tiny-v2"),
        (3, "triangle", None, None, None),
    ]
    assert predictions == [
        (1, "square", "tiny-v1", 1),
        (1, "circle", "tiny-v1", 1),
        (1, "triangle", "tiny-v1", 0),
        (2, "square", "tiny-v2", 0),
    ]
    # annotations.json, what fine-tuning reads, is unchanged by all this.
    assert sum(len(image.annotations) for image in read_coco(root / "annotations.json").images) == 5

    assert main(["evaluate-store", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", "version", "predicted", "kept", "acceptance", "drawn"]
    assert [line.split() for line in lines[1:]] == [
        ["tiny-v1", "3", "2", "66.7%", "1"],
        ["tiny-v2", "1", "0", "0.0%", "1"],
    ]


def test_a_schema_1_corrections_store_migrates_and_keeps_its_boxes(tmp_path: Path, capsys) -> None:
    from minigpt_annotate.cli import main
    from ml_backend import corrections_db

    root = tmp_path / "old"
    root.mkdir()
    (root / "images").mkdir()
    Image.new("RGB", SIZE).save(root / "images" / "task-5.png")
    with sqlite3.connect(root / "corrections.sqlite") as db:  # schema 1 exactly as it was created and written
        for statement in corrections_db._SCHEMA:
            db.execute(statement)
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (1,)
        db.execute("UPDATE meta SET value = 1 WHERE key = 'generation'")
        db.execute("INSERT INTO categories (name) VALUES ('square')")
        db.execute("INSERT INTO tasks VALUES (5, 'images/task-5.png', 64, 48, 's3://b/x.png')")
        db.execute("INSERT INTO annotations VALUES (50, 5, 1)")
        db.execute("INSERT INTO boxes VALUES (50, 0, 'square', 1.0, 2.0, 20.0, 30.0)")
    db.close()
    assert main(["evaluate-store", str(root)]) == 0  # read-only: before migrating, nothing recorded yet
    assert "no annotation with a prediction recorded yet" in capsys.readouterr().out

    store = CorrectionStore(root)
    store.close()
    with sqlite3.connect(root / "corrections.sqlite") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (2,)
        assert db.execute("SELECT label, x0, y1, origin, predicted, model_version FROM boxes").fetchall() == [
            ("square", 1.0, 30.0, None, None, None)  # what schema 1 never knew stays unknown
        ]
    db.close()
    (image,) = read_coco(root / "annotations.json").images
    assert [(a.label, a.box.xyxy) for a in image.annotations] == [("square", (1.0, 2.0, 20.0, 30.0))]


def test_without_a_prediction_in_the_webhook_the_one_the_backend_served_is_compared(
    media: Path, tmp_path: Path
) -> None:
    """Label Studio 1.23 leaves the annotation's `prediction` empty unless the project's model version (after
    connecting: the backend's title) names the predictions' version; the store then uses what /predict served."""
    root = tmp_path / "corrections"
    store = CorrectionStore(root)
    client = _client(store, media)
    # /predict as Label Studio's "Retrieve predictions" calls it: what it served for task 4 is kept.
    task = {"id": 4, "data": {"image": "/data/local-files/?d=img-1.png"}}
    answer = client.post("/predict", json={"tasks": [task], "label_config": CONFIG, "project": "1.1700000000"})
    assert answer.status_code == 200
    with contextlib.closing(sqlite3.connect(root / "corrections.sqlite")) as db:
        assert db.execute("SELECT task_id, model_version FROM served").fetchall() == [(4, "tiny-shapes")]
    # A later serving of task 4 replaces it; here one with a square and a circle.
    boxes = [("square", _region("square", 10)["value"], 0.9), ("circle", _region("circle", 50)["value"], None)]
    assert store.remember_predictions([(4, "tiny-v3", boxes), ("not a task", "tiny-v3", boxes)]) == 1
    body = _event("ANNOTATION_CREATED", 41, 4, [_with(_region("square", 11), "prediction-changed")])
    body["annotation"]["prediction"] = {}
    assert client.post("/webhook", json=body).status_code == 201
    store.close()
    with contextlib.closing(sqlite3.connect(root / "corrections.sqlite")) as db:
        assert db.execute("SELECT predicted, model_version FROM boxes").fetchall() == [(1, "tiny-v3")]
        assert db.execute("SELECT label, kept FROM predictions ORDER BY position").fetchall() == [
            ("square", 1),
            ("circle", 0),
        ]
