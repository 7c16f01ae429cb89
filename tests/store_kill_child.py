"""Child process for the kill -9 test of the project store (tests/test_annotator_core.py).

Usage: ``python store_kill_child.py STORE MODE EDITS SEED``. It edits boxes in a burst of undoable BoxChanges and
prints one JSON line (flushed) before each edit (``begin``: the rows expected after it, new rows with id null) and
one after its commit (``done``: every box in the store). Then it dies by SIGKILL:

* ``in_transaction``: during edit number EDITS, after its rows are written but before its COMMIT;
* ``timer``: from a thread, after a random delay, wherever the burst happens to be.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotator.core.edits import BoxChange
from annotator.core.records import BoxRow, BoxState
from annotator.core.store import ProjectStore
from model.annotations import Box, Origin

LABELS = ("cat", "dog", "bird")


def canonical(rows: list[BoxRow]) -> list[list[object]]:
    """Rows as JSON lists in a fixed order; a row not yet saved has id None."""
    out = [
        [
            row.id,
            row.image_id,
            row.label,
            *row.box.xyxy,
            row.state.value,
            getattr(row.origin, "value", None),
        ]
        for row in rows
    ]
    return sorted(out, key=lambda r: json.dumps(r))


def all_rows(store: ProjectStore) -> list[BoxRow]:
    return [row for rows in store.all_boxes().values() for row in rows]


def random_box(rng: random.Random) -> Box:
    x0, y0 = rng.randrange(0, 400) / 2, rng.randrange(0, 400) / 2
    return Box.from_xywh((x0, y0, rng.randrange(2, 200) / 2, rng.randrange(2, 200) / 2))


def shifted(box: Box, dx: float, dy: float) -> Box:
    return Box(x0=box.x0 + dx, y0=box.y0 + dy, x1=box.x1 + dx, y1=box.y1 + dy)


def next_change(rng: random.Random, store: ProjectStore, image_ids: list[int]) -> BoxChange:
    rows = all_rows(store)
    roll = rng.random()
    if not rows or (roll < 0.4 and len(rows) < 40):
        image_id = rng.choice(image_ids)
        added = [
            BoxRow(image_id, rng.choice(LABELS), random_box(rng), BoxState.annotation, origin=Origin.manual)
            for _ in range(rng.randint(1, 12))  # several rows: one transaction that takes a while
        ]
        return BoxChange("Add", image_id, before=[], after=added)
    target = rng.choice(rows)
    same_image = [row for row in rows if row.image_id == target.image_id]
    picked = rng.sample(same_image, rng.randint(1, len(same_image)))
    if roll < 0.75:
        dx, dy = rng.randrange(-20, 21) / 2, rng.randrange(-20, 21) / 2
        moved = [row.moved_to(shifted(row.box, dx, dy)) for row in picked]
        return BoxChange("Move", target.image_id, before=picked, after=moved)
    return BoxChange("Delete", target.image_id, before=picked, after=[])


def expected_after(rows: list[BoxRow], change: BoxChange) -> list[BoxRow]:
    gone = {row.id for row in change.before}
    return [row for row in rows if row.id not in gone] + list(change.after)


def emit(kind: str, index: int, rows: list[BoxRow]) -> None:
    print(json.dumps({"kind": kind, "index": index, "rows": canonical(rows)}), flush=True)


def main() -> None:
    store_path, mode, edits, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    store = ProjectStore.open(store_path)
    image_ids = [image.id for image in store.images()]
    if mode == "timer":
        threading.Timer(rng.uniform(0.05, 0.4), os.kill, (os.getpid(), signal.SIGKILL)).start()
    for index in range(100_000 if mode == "timer" else edits + 1):
        change = next_change(rng, store, image_ids)
        emit("begin", index, expected_after(all_rows(store), change))  # new rows' ids are still None
        if mode == "in_transaction" and index == edits:
            put = store.put_boxes

            def put_then_die(rows: list[BoxRow], put=put) -> None:  # type: ignore[no-untyped-def]
                put(rows)  # written inside the open transaction of this edit, never committed
                os.kill(os.getpid(), signal.SIGKILL)

            store.put_boxes = put_then_die  # type: ignore[method-assign]  # redo calls it after a delete's DELETEs too
        change.redo(store)
        emit("done", index, all_rows(store))
    sys.exit(3)  # never reached when the kill works


if __name__ == "__main__":
    main()
