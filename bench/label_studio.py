"""Predictions per second through a real Label Studio, against the engine alone, on the same machine. Prints JSON.

Through Label Studio: the Data Manager action "Retrieve predictions" on every task of a project whose images were
uploaded, served by `minigpt-annotate serve` (the backend downloads each image from Label Studio, runs one
`[detection]` prompt per label, validates and returns; Label Studio stores the predictions). Engine alone: the core's
batched `Proposer.propose_batch` on the same image files and prompts, in this process. Both use the shipped tiny
shapes model on CPU, both after a warm-up.

    python bench/label_studio.py [--images 48] [--out /tmp/ls-bench]

Needs Label Studio 1.23.2 in its own venv (scripts/setup-label-studio.sh; tests/ls_harness.py finds it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from backend_process import running_backend, serve_command  # noqa: E402
from ls_harness import LabelStudioServer, free_port  # noqa: E402

from model.proposer import Proposer, ProposeRequest  # noqa: E402
from model.synthetic.shapes import make_shapes  # noqa: E402
from model.synthetic.shapes_model import SHIPPED_DIR  # noqa: E402

LABELS = ("square", "circle", "triangle")
CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    + "".join(f'<Label value="{label}"/>' for label in LABELS)
    + "</RectangleLabels></View>"
)


def engine_alone(images: list[Path]) -> dict:
    proposer = Proposer.from_pretrained(SHIPPED_DIR, device="cpu")
    requests_ = [ProposeRequest(str(path), "detection", label) for path in images for label in LABELS]
    proposer.propose_batch(requests_[: 4 * len(LABELS)], batch_size=16)  # warm-up
    started = time.perf_counter()
    proposer.propose_batch(requests_, batch_size=16)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "images_per_s": len(images) / seconds, "prompts_per_s": len(requests_) / seconds}


def through_label_studio(images: list[Path], work: Path) -> dict:
    with LabelStudioServer(work / "ls-data") as ls:
        port = free_port()
        env = {**os.environ, "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.personal_access_token}
        with running_backend(serve_command(port), port, work / "serve.log", env) as url:
            project = ls.create_project("bench", CONFIG)
            tasks = ls.import_images(project, images)
            ls.connect_ml_backend(project, url, "minigpt-annotate", is_interactive=False)
            warm = [t["id"] for t in tasks[:4]]
            ls.retrieve_predictions(project, warm)
            rest = [t["id"] for t in tasks[4:]]
            before = requests.get(f"{url}/metrics", timeout=10).json()
            started = time.perf_counter()
            ls.retrieve_predictions(project, rest)
            seconds = time.perf_counter() - started
            after = requests.get(f"{url}/metrics", timeout=10).json()
            stored = sum(len(ls.predictions(task_id)) for task_id in rest)
    return {
        "tasks": len(rest),
        "predictions_stored": stored,
        "seconds": seconds,
        "predictions_per_s": stored / seconds,
        "backend_predict_calls": after["predict_calls"] - before["predict_calls"],
        "backend_model_seconds": after["model_seconds"] - before["model_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    work = args.out or Path(tempfile.mkdtemp(prefix="ls-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "shapes" / "annotations.json").exists():
        make_shapes(work / "shapes", images=args.images, seed=77, max_shapes=2)
    images = sorted((work / "shapes" / "images").iterdir())

    ls = through_label_studio(images, work)
    engine = engine_alone(images[4:])
    print(
        json.dumps(
            {
                "machine": f"{os.cpu_count()} CPU cores, no GPU",
                "model": "shipped tiny shapes model, fp32, CPU",
                "prompts_per_image": len(LABELS),
                "through_label_studio": ls,
                "engine_alone": engine,
                "ratio_label_studio_to_engine": ls["predictions_per_s"] / engine["images_per_s"],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
