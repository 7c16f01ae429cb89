"""Importing a COCO file with many boxes on one image into the desktop's project store, twice (issue 13 item 10).

The second import is the costly one: every box in the file must be compared with the annotations already there, so
that importing the same file again adds nothing. Prints JSON:

* ``first_import_s`` / ``second_import_s``: wall time of :func:`annotator.core.exchange.import_coco` into a fresh
  store, then of the same file again (which must add nothing);
* ``added`` / ``duplicates``: what each import reported;
* ``iou_evaluations``: how many box overlaps the second import computed (the work that used to be quadratic);
* ``second_read_s`` / ``second_match_s`` / ``second_apply_s``: the second import's three parts: reading the file
  and finding its duplicates (worker threads in the desktop), and writing (one transaction on the GUI thread);
* ``window`` (with ``--window``): the same two imports through the real window (offscreen), showing another image
  meanwhile: wall time until the status bar has the result, and ``longest_freeze_s``, the longest the GUI thread
  went without handling a 5 ms timer, i.e. how long the window could not repaint or react. (Showing the image with
  the 10k boxes is the canvas's own cost, measured apart as ``window_paint_10k_boxes_s``.)

    python bench/coco_reimport.py [--boxes 10000] [--window]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
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
    Image.new("RGB", (64, 48), "grey").save(folder / "other.png")  # what the window shows while importing
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
    parser.add_argument("--window", action="store_true", help="also import through the real window, offscreen")
    args = parser.parse_args()

    from annotator.core.exchange import apply_import, import_coco, match_import, read_import
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
        iou_second = iou_calls
        started = time.perf_counter()
        plan = read_import(store.images(), folder, coco)
        read_s = time.perf_counter() - started
        started = time.perf_counter()
        plan = match_import(plan, store.annotation_corners(plan.image_ids), store.generation)
        match_s = time.perf_counter() - started
        started = time.perf_counter()
        apply_import(store, plan)
        apply_s = time.perf_counter() - started
    finally:
        Box.iou = plain_iou  # type: ignore[method-assign]
        store.close()
    result = {
        "boxes": args.boxes,
        "first_import_s": round(first_s, 3),
        "second_import_s": round(second_s, 3),
        "added": [first.annotations_added, second.annotations_added],
        "duplicates": [first.duplicates_skipped, second.duplicates_skipped],
        "iou_evaluations": iou_second,
        "second_read_s": round(read_s, 3),
        "second_match_s": round(match_s, 3),
        "second_apply_s": round(apply_s, 3),
    }
    if args.window:
        result["window"] = through_the_window(folder, coco, work / "window.minigpt.sqlite")
    print(json.dumps(result, indent=2))


def through_the_window(folder: Path, coco: Path, store: Path) -> dict[str, object]:
    """Import ``coco`` twice through the real window; per import, the wall time and the GUI thread's longest freeze."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from annotator.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow()
    window.open_folder(folder, store)
    window.show()
    assert window.session is not None
    by_path = {row.path: row.id for row in window.session.images()}
    window.go_to(by_path["other.png"])  # the canvas's cost of drawing 10k boxes is not the import's
    app.processEvents()
    ticks: list[float] = []
    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    runs = []
    for _ in range(2):
        assert window.importer is not None
        ticks.clear()
        timer.start()
        started = time.perf_counter()
        ticks.append(started)
        window.import_from(coco)
        while window.importer.busy:
            app.processEvents()
            time.sleep(0.001)
        ended = time.perf_counter()
        ticks.append(ended)
        timer.stop()
        runs.append(
            {
                "wall_s": round(ended - started, 3),
                "longest_freeze_s": round(max(b - a for a, b in itertools.pairwise(ticks)), 3),
                "result": window.statusBar().currentMessage(),
            }
        )
    window.go_to(by_path["crowded.png"])
    started = time.perf_counter()
    window.canvas.viewport().repaint()  # one full paint of the image with its 10k boxes
    paint_s = time.perf_counter() - started
    window.close()
    return {"imports": runs, "window_paint_10k_boxes_s": round(paint_s, 3)}


if __name__ == "__main__":
    main()
