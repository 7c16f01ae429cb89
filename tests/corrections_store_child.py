"""Child process for the corrections store's crash and multi-process tests (tests/test_corrections_store.py).

Usage: ``python corrections_store_child.py STORE MODE OPS SEED [WORKER]``. It applies random webhook operations to
a `CorrectionStore` (saves of new and stored tasks, updates, deletes of known and unknown ids) and prints one JSON
line (flushed) before each (``begin``, with the operation) and one after it returned (``done``): a ``done`` line is
a webhook Label Studio got its 201 for. Then, by MODE:

* ``timer``: a thread sends SIGKILL after a random delay, wherever the burst is (inside a transaction, an image
  copy, between them), while background exports run beside it in processes of their own;
* ``in_transaction``: operation number OPS is a save of a new task, killed inside its transaction, after its image
  copy and rows are written and before COMMIT;
* ``in_export``: after OPS operations and one more save, an export (the one the background child process runs) is
  killed as it starts writing annotations.json;
* ``burst``: OPS operations, then a normal exit (several workers share one store; ids are offset by WORKER).
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image

import ml_backend.corrections as corrections
from ml_backend import corrections_db
from ml_backend.corrections import CorrectionStore

LABELS = ("cat", "dog", "bird")


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (40 + seed % 7, 30 + seed % 5), (seed % 256, 80, 160)).save(buffer, "PNG")
    return buffer.getvalue()


def region(rng: random.Random) -> tuple[str, dict]:
    x, y = rng.uniform(0, 60), rng.uniform(0, 60)
    value = {"x": x, "y": y, "width": rng.uniform(5, 35), "height": rng.uniform(5, 35), "rotation": 0}
    label = rng.choice(LABELS)
    return label, {**value, "rectanglelabels": [label]}


def next_op(rng: random.Random, known: dict[int, int], worker: int, index: int) -> dict:
    """A save (new task, or a stored task's annotation again, or a second annotator) or a delete."""
    roll = rng.random()
    base = 1000 * worker
    if known and roll < 0.25:
        annotation = rng.choice(sorted(known))
        return {"op": "delete", "ids": [annotation, base + 900 + rng.randrange(50)]}  # one known, one unknown
    if known and roll < 0.55:
        annotation = rng.choice(sorted(known))
        task = known[annotation]
    else:
        task = base + rng.randrange(1, 40)
        annotation = base + 100 + index
    regions = [region(rng) for _ in range(rng.randint(0, 4))]
    return {"op": "save", "task": task, "annotation": annotation, "regions": regions}


def apply(store: CorrectionStore, op: dict) -> None:
    if op["op"] == "delete":
        store.delete(op["ids"])
    else:
        regions = [(label, value) for label, value in op["regions"]]
        store.save(op["task"], op["annotation"], regions, source=f"s3://b/{op['task']}.png",
                   fetch_image=lambda: png(op["task"]))  # fmt: skip


def emit(kind: str, index: int, op: dict) -> None:
    print(json.dumps({"kind": kind, "index": index, **op}), flush=True)


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    store_path, mode, ops, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    worker = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    rng = random.Random(seed)
    store = CorrectionStore(store_path, export_delay_s=0.02)  # background exports run often, beside the burst
    known: dict[int, int] = {}  # annotation → task, as far as this process knows

    if mode == "timer":
        threading.Timer(rng.uniform(0.1, 0.8), kill).start()
    if mode == "in_export":
        store.export_delay_s = 3600.0  # no export but the one killed below

        def write_then_die(*args, **kwargs):  # type: ignore[no-untyped-def]
            kill()

        corrections.write_coco = write_then_die  # type: ignore[assignment]

    for index in range(100_000 if mode == "timer" else ops + 1):
        op = next_op(rng, known, worker, index)
        if index == ops and mode == "burst":
            break
        if index == ops and mode != "timer":  # the last operation: a save of a task no other operation uses
            op = {"op": "save", "task": 1000 * worker + 500, "annotation": 1000 * worker + 999,
                  "regions": [region(rng)]}  # fmt: skip
            if mode == "in_transaction":
                real_put = corrections_db.put_annotation

                def put_then_die(*args, real_put=real_put, **kwargs):  # type: ignore[no-untyped-def]
                    real_put(*args, **kwargs)
                    kill()  # rows and image copy written inside the open transaction, never committed

                corrections_db.put_annotation = put_then_die  # type: ignore[assignment]
        emit("begin", index, op)
        apply(store, op)
        emit("done", index, op)
        if op["op"] == "save":
            known[op["annotation"]] = op["task"]
        else:
            for annotation in op["ids"]:
                known.pop(annotation, None)
    if mode == "in_export":
        store.export()  # killed inside
    if mode == "burst":
        store.close()
        sys.exit(0)
    sys.exit(3)  # never reached when the kill works


if __name__ == "__main__":
    main()
