"""`minigpt-annotate serve` on loopback under load: 200 concurrent /predict requests, all answered correctly."""

from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from backend_process import running_backend, serve_command
from ls_harness import free_port

from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="square"/><Label value="circle"/><Label value="triangle"/></RectangleLabels></View>'
)
REQUESTS = 200
TIMEOUT_S = 120  # per request: a bound, not a speed claim


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
    response = requests.post(f"{url}/predict", json={"tasks": tasks, "label_config": CONFIG}, timeout=TIMEOUT_S)
    response.raise_for_status()
    return response.json()["results"]


def _comparable(prediction: dict) -> list:
    return [
        (r["value"]["rectanglelabels"], round(r["value"]["x"], 6), round(r["score"], 6)) for r in prediction["result"]
    ]


def test_200_concurrent_requests_are_all_answered_correctly(server) -> None:
    url, names = server
    tasks = [{"id": i, "data": {"image": f"/data/local-files/?d={name}"}} for i, name in enumerate(names, start=1)]
    broken = {"id": 99, "data": {"image": "/data/local-files/?d=images/does-not-exist.png"}}
    expected = {task["id"]: _comparable(_predict(url, [task])[0]) for task in tasks}

    # each request: one or two tasks, every tenth with a broken image next to a good one
    batches = []
    for i in range(REQUESTS):
        good = tasks[i % len(tasks)]
        batches.append([good, broken] if i % 10 == 0 else [good, tasks[(i + 1) % len(tasks)]])

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:  # all 200 in flight at once
        answers = list(pool.map(lambda batch: _predict(url, batch), batches))

    assert len(answers) == REQUESTS
    for batch, answer in zip(batches, answers, strict=True):
        assert len(answer) == len(batch)
        for task, prediction in zip(batch, answer, strict=True):
            if task is broken:
                assert prediction["result"] == []
            else:
                assert _comparable(prediction) == expected[task["id"]]
    metrics = requests.get(f"{url}/metrics", timeout=10).json()
    assert metrics["predict_calls"] == REQUESTS + len(tasks)
    assert metrics["failed_tasks"] == REQUESTS // 10


def test_gunicorn_serves_the_wsgi_app_configured_by_the_environment(tmp_path: Path) -> None:
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
    gunicorn = Path(sys.executable).with_name("gunicorn")
    command = [str(gunicorn), "--workers", "1", "--threads", "4", "--bind", f"127.0.0.1:{port}", "ml_backend.wsgi:app"]
    with running_backend(command, port, tmp_path / "gunicorn.log", env) as url:
        assert requests.get(f"{url}/health", timeout=10).json()["model_version"] == "shapes-v1"
        (prediction,) = _predict(url, [{"id": 1, "data": {"image": f"/data/local-files/?d={name}"}}])
        assert prediction["model_version"] == "shapes-v1"
        assert all(r["type"] == "rectanglelabels" for r in prediction["result"])
