"""Corrections store benchmark: what one webhook costs with N tasks already stored. Prints JSON.

Through the real Flask app (`/webhook`, the tiny shapes model loaded on the CPU, images from a local-files root), a
store that already holds `--tasks` annotated tasks receives, one after another and timed one by one:
- `updated`: ANNOTATION_UPDATED of a stored task's annotation (3 boxes);
- `created`: ANNOTATION_CREATED on a new task (its image is fetched and copied);
- `deleted`: ANNOTATIONS_DELETED of one stored annotation;
- `deleted_unknown`: one ANNOTATIONS_DELETED listing `--unknown` ids the store never saw (Label Studio sends this
  when annotations made before the backend was connected are deleted).

The stored tasks are seeded as a version-1 `state.json` (the store's earlier format, which the SQLite store imports
when it opens), so the same script measures the store before and after the change:

    python bench/corrections_store.py --tasks 10000                         # this checkout
    PYTHONPATH=/path/to/old/checkout python bench/corrections_store.py     # an older store, same seed data

`export_s` is the time to write `annotations.json` from the whole store (the SQLite store does it beside the request
path, coalesced, in a child process; see ml_backend/corrections.py), and `updated_during_export` the updates answered
while such a background export runs.
`open_s` includes importing the seed `state.json` and the first export; `reopen_s` is a restart's. The older store
writes everything inside each event, so it has none of these.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image

from label_studio_access.media import MediaFetcher, MediaSettings
from ml_backend.backend import MiniGPTBackend
from ml_backend.corrections import CorrectionStore
from ml_backend.server import create_app
from ml_backend.settings import load_proposer
from model.synthetic.shapes_model import SHIPPED_DIR

CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="square"/><Label value="circle"/><Label value="triangle"/>
  </RectangleLabels>
</View>
"""
LABELS = ("square", "circle", "triangle")
SIZE = (64, 48)


def seed_state(root: Path, tasks: int) -> None:
    """A version-1 state.json with `tasks` tasks of one annotation (id 10^6 + task id) holding three boxes."""
    w, h = SIZE
    state = {
        "version": 1,
        "categories": list(LABELS),
        "tasks": {
            str(t): {
                "image": f"images/task-{t}.png",
                "width": w,
                "height": h,
                "source": f"/data/local-files/?d=img-{t % 4}.png",
                "annotations": {
                    str(10**6 + t): [
                        {"label": LABELS[i], "bbox": [1.0 + i, 2.0 + i, 20.0 + i, 30.0 + i]} for i in range(3)
                    ]
                },
            }
            for t in range(1, tasks + 1)
        },
    }
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "state.json").write_text(json.dumps(state))


def region(label: str, x: float) -> dict:
    value = {"x": x, "y": 10.0, "width": 20.0, "height": 30.0, "rotation": 0, "rectanglelabels": [label]}
    return {"from_name": "label", "to_name": "image", "type": "rectanglelabels", "value": value}


def annotation_event(action: str, annotation_id: int, task_id: int) -> dict:
    task = {"id": task_id, "project": 1, "data": {"image": f"/data/local-files/?d=img-{task_id % 4}.png"}}
    result = [region(label, 5.0 + 20 * i) for i, label in enumerate(LABELS)]
    return {
        "action": action,
        "annotation": {"id": annotation_id, "task": task_id, "result": result, "was_cancelled": False},
        "task": task,
        "project": {"id": 1, "label_config": CONFIG},
    }


def deleted_event(ids: list[int]) -> dict:
    return {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": i} for i in ids], "project": {"id": 1}}


def timed(client, body: dict) -> float:
    started = time.perf_counter()
    response = client.post("/webhook", json=body)
    elapsed = time.perf_counter() - started
    if response.status_code != 201:
        sys.exit(f"bench: {body['action']} answered {response.status_code}: {response.get_data(as_text=True)}")
    return elapsed


def stats(seconds: list[float]) -> dict:
    return {"n": len(seconds), "median_s": round(statistics.median(seconds), 4), "max_s": round(max(seconds), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks stored before the timed events")
    parser.add_argument("--events", type=int, default=5, help="timed events of each kind")
    parser.add_argument("--unknown", type=int, default=300, help="ids in the ANNOTATIONS_DELETED of unknown ids")
    parser.add_argument("--out", type=Path, default=None, help="folder to keep (default: a temporary one)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)

    with tempfile.TemporaryDirectory() as scratch:
        folder = args.out or Path(scratch)
        media, store_dir = folder / "media", folder / "corrections"
        media.mkdir(parents=True, exist_ok=True)
        for i in range(4):
            buffer = io.BytesIO()
            Image.new("RGB", SIZE, (40 * i, 90, 200)).save(buffer, "PNG")
            (media / f"img-{i}.png").write_bytes(buffer.getvalue())
        seed_state(store_dir, args.tasks)

        started = time.perf_counter()
        store = CorrectionStore(store_dir)
        open_s = time.perf_counter() - started
        fetcher = MediaFetcher(MediaSettings(local_files_root=media))
        client = create_app(MiniGPTBackend(load_proposer(str(SHIPPED_DIR), "cpu"), fetcher, corrections=store))
        client = client.test_client()

        n = args.tasks
        updated = [
            timed(client, annotation_event("ANNOTATION_UPDATED", 10**6 + t, t)) for t in range(1, args.events + 1)
        ]
        created = [
            timed(client, annotation_event("ANNOTATION_CREATED", 2 * 10**6 + k, n + 1 + k)) for k in range(args.events)
        ]
        deleted = [timed(client, deleted_event([10**6 + n - k])) for k in range(args.events)]
        deleted_unknown = timed(client, deleted_event([3 * 10**6 + k for k in range(args.unknown)]))

        during_export: list[float] = []
        export_s = 0.0
        if hasattr(store, "export"):  # the SQLite store: the export runs beside the webhooks, not inside them
            started = time.perf_counter()
            store.export()
            export_s = time.perf_counter() - started  # alone, in this process
            timed(client, annotation_event("ANNOTATION_UPDATED", 10**6 + 1, 1))
            exporting = threading.Thread(target=store._export_in_background)  # the child process it starts itself
            exporting.start()
            t = 1
            while exporting.is_alive():  # webhooks answered while an export of the whole store runs
                during_export.append(timed(client, annotation_event("ANNOTATION_UPDATED", 10**6 + t, t)))
                t += 1
            exporting.join()
            store.export()  # and what the last of those changed
        coco = json.loads((store_dir / "annotations.json").read_text())
        expected_images = n + args.events - args.events  # created some, deleted as many
        if len(coco["images"]) != expected_images:
            sys.exit(f"bench: annotations.json has {len(coco['images'])} images, expected {expected_images}")
        reopen_s = None
        if hasattr(store, "close"):
            store.close()
            started = time.perf_counter()
            CorrectionStore(store_dir).close()  # a restart: nothing to import, annotations.json is current
            reopen_s = round(time.perf_counter() - started, 3)
        print(
            json.dumps(
                {
                    "store": str(Path(sys.modules["ml_backend"].__file__).parent),
                    "tasks": n,
                    "open_s": round(open_s, 3),
                    "reopen_s": reopen_s,
                    "updated": stats(updated),
                    "created": stats(created),
                    "deleted": stats(deleted),
                    "deleted_unknown": {"ids": args.unknown, "seconds": round(deleted_unknown, 4)},
                    "updated_during_export": stats(during_export) if during_export else None,
                    "export_s": round(export_s, 4),
                    "annotations_json_bytes": (store_dir / "annotations.json").stat().st_size,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
