"""`minigpt-annotate serve` on loopback under load: 200 concurrent /predict requests, all answered correctly.

Bounded by progress, not by the clock: a busy machine may take minutes to answer 200 requests queued behind one
model lock, so no request has a read timeout; the test fails if no answer at all arrives for STALL_S.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import pytest
import requests
from backend_process import running_backend, serve_command
from ls_harness import free_port
from same_answers import assert_same_proposals

from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="square"/><Label value="circle"/><Label value="triangle"/></RectangleLabels></View>'
)
REQUESTS = 200
STALL_S = 600  # fail when no request at all is answered for this long: a hang, not a slow machine


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("served")
    make_shapes(root, images=6, seed=5, max_shapes=2)
    port = free_port()
    env = {**os.environ, "LOCAL_FILES_DOCUMENT_ROOT": str(root)}
    env.pop("LABEL_STUDIO_URL", None)
    with running_backend(serve_command(port), port, root / "serve.log", env) as url:
        yield url, sorted(p.relative_to(root).as_posix() for p in (root / "images").iterdir())


def _predict(url: str, tasks: list[dict]) -> list[dict]:
    # A request waits in the queue for as long as the requests before it take: no read timeout (see STALL_S).
    response = requests.post(f"{url}/predict", json={"tasks": tasks, "label_config": CONFIG}, timeout=(STALL_S, None))
    response.raise_for_status()
    return response.json()["results"]


def _all_answered(url: str, batches: list[list[dict]]) -> list[list[dict]]:
    """Every batch posted at once, each from its own thread; the answers in order. Fails on a stall."""
    pool = ThreadPoolExecutor(max_workers=len(batches))  # all in flight at once
    futures = [pool.submit(_predict, url, batch) for batch in batches]
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, timeout=STALL_S, return_when=FIRST_COMPLETED)
            assert done, f"no answer for {STALL_S} s: {len(batches) - len(pending)} of {len(batches)} answered"
    finally:
        # On a stall, do not wait for the stuck threads: stopping the server (the fixture) releases them.
        pool.shutdown(wait=not pending, cancel_futures=True)
    return [future.result() for future in futures]


def test_200_concurrent_requests_are_all_answered_correctly(server) -> None:
    url, names = server
    tasks = [{"id": i, "data": {"image": f"/data/local-files/?d={name}"}} for i, name in enumerate(names, start=1)]
    broken = {"id": 99, "data": {"image": "/data/local-files/?d=images/does-not-exist.png"}}
    expected = {task["id"]: _predict(url, [task])[0] for task in tasks}

    # each request: one or two tasks, every tenth with a broken image next to a good one
    batches = []
    for i in range(REQUESTS):
        good = tasks[i % len(tasks)]
        batches.append([good, broken] if i % 10 == 0 else [good, tasks[(i + 1) % len(tasks)]])

    answers = _all_answered(url, batches)

    assert len(answers) == REQUESTS
    for batch, answer in zip(batches, answers, strict=True):
        assert len(answer) == len(batch)
        for task, prediction in zip(batch, answer, strict=True):
            if task is broken:
                assert prediction["result"] == []
            else:
                # a task batched with another one scores within float drift of the task alone (same_answers.py)
                assert_same_proposals(prediction["result"], expected[task["id"]]["result"], ignore={"id"})
    metrics = requests.get(f"{url}/metrics", timeout=STALL_S).json()
    assert metrics["predict_calls"] == REQUESTS + len(tasks)
    assert metrics["failed_tasks"] == REQUESTS // 10


def test_a_wsgi_server_serves_the_wsgi_app_configured_by_the_environment(tmp_path: Path) -> None:
    make_shapes(tmp_path, images=1, seed=3, max_shapes=1)
    (name,) = [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "images").iterdir()]
    port = free_port()
    env = {
        **os.environ,
        "MINIGPT_MODEL": str(SHIPPED_DIR),
        "MINIGPT_DEVICE": "cpu",
        "MINIGPT_MODEL_VERSION": "shapes-v1",
        "LOCAL_FILES_DOCUMENT_ROOT": str(tmp_path),
    }
    waitress = Path(sys.executable).with_name("waitress-serve")  # any WSGI server; waitress is the one installed
    command = [str(waitress), "--threads=4", f"--listen=127.0.0.1:{port}", "ml_backend.wsgi:app"]
    with running_backend(command, port, tmp_path / "wsgi.log", env) as url:
        assert requests.get(f"{url}/health", timeout=STALL_S).json()["model_version"] == "shapes-v1"
        (prediction,) = _predict(url, [{"id": 1, "data": {"image": f"/data/local-files/?d={name}"}}])
        assert prediction["model_version"] == "shapes-v1"
        assert all(r["type"] == "rectanglelabels" for r in prediction["result"])
