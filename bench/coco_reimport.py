"""Importing a COCO file with many boxes on one image into the desktop's project store, twice (issue 13 item 10).

The second import is the costly one: every box in the file must be compared with the annotations already there, so
that importing the same file again adds nothing. Prints JSON:

* ``first_import_s`` / ``second_import_s``: wall time of :func:`annotator.core.exchange.import_coco` into a fresh
  store, then of the same file again (which must add nothing);
* ``added`` / ``duplicates``: what each import reported;
* ``iou_evaluations``: how many box overlaps the second import computed (the work that used to be quadratic).

    python bench/coco_reimport.py [--boxes 10000]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_coco_file(folder: Path, boxes: int, seed: int = 0) -> Path:
    """One 2000×1500 PNG in ``folder`` and a COCO file with ``boxes`` random boxes on it, in three categories."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    width, height = 2000, 1500
    Image.new("RGB", (width, height), "white").save(folder / "crowded.png")
    rng = random.Random(seed)
    annotations = []
    for i in range(boxes):
        w, h = rng.uniform(4, 120), rng.uniform(4, 120)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        annotations.append(
            {"id": i + 1, "image_id": 1, "category_id": 1 + i % 3, "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
        )
    coco = {
        "images": [{"id": 1, "file_name": "crowded.png", "width": width, "height": height}],
        "categories": [{"id": i, "name": name} for i, name in enumerate(("cell", "nucleus", "debris"), start=1)],
        "annotations": annotations,
    }
    path = folder.parent / "crowded.json"
    path.write_text(json.dumps(coco))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=10_000, help="boxes on the one image (default 10000)")
    args = parser.parse_args()

    from annotator.core.exchange import import_coco
    from annotator.core.folder import open_project
    from model.annotations import Box

    work = Path(tempfile.mkdtemp(prefix="coco-reimport-"))
    folder = work / "images"
    coco = write_coco_file(folder, args.boxes)
    store = open_project(folder, work / "bench.minigpt.sqlite")

    iou_calls = 0
    plain_iou = Box.iou

    def counted_iou(self: Box, other: Box) -> float:
        nonlocal iou_calls
        iou_calls += 1
        return plain_iou(self, other)

    Box.iou = counted_iou  # type: ignore[method-assign]  # counts the overlaps computed, whatever the matcher
    try:
        started = time.perf_counter()
        first = import_coco(store, folder, coco)
        first_s = time.perf_counter() - started
        iou_calls = 0
        started = time.perf_counter()
        second = import_coco(store, folder, coco)
        second_s = time.perf_counter() - started
    finally:
        Box.iou = plain_iou  # type: ignore[method-assign]
        store.close()
    result = {
        "boxes": args.boxes,
        "first_import_s": round(first_s, 3),
        "second_import_s": round(second_s, 3),
        "added": [first.annotations_added, second.annotations_added],
        "duplicates": [first.duplicates_skipped, second.duplicates_skipped],
        "iou_evaluations": iou_calls,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
