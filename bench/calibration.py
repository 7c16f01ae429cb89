"""How far the score can be trusted, before and after calibration, on held-out shapes. Prints JSON.

Two disjoint shapes sets (different seeds): calibration is fitted on the first with `evaluate --calibrate`'s code,
and every figure is measured on the second, so the "after" ECE is out of sample. Reported per task: ROC AUC,
ECE (10 bins) and the share of wrong proposals found by reviewing the lowest-scoring 10/20/50%.

    python bench/calibration.py [--images 300] [--max-shapes 4] [--out /tmp/calibration-bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from model.annotations import Task
from model.calibration import Calibration, weights_fingerprint
from model.coco import read_coco
from model.evaluation.runner import collect_predictions, score_pairs, score_predictions
from model.proposer import Proposer
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR

TASKS = (Task.refer, Task.detection)


def quality(report) -> dict:
    out = {}
    for name in ("detection", "refer", "overall"):
        q = getattr(report.scores, name)
        if q is None:
            continue
        out[name] = {
            "n": q.n,
            "kept": q.n_kept,
            "roc_auc": q.roc_auc,
            "ece": q.ece,
            "triage": {f"{p.reviewed:.0%}": p.caught for p in q.triage},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--max-shapes", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("/tmp/calibration-bench"))
    args = parser.parse_args()

    fit_set = read_coco(make_shapes(args.out / "fit", images=args.images, seed=101, max_shapes=args.max_shapes))
    held_out = read_coco(make_shapes(args.out / "held-out", images=args.images, seed=202, max_shapes=args.max_shapes))
    model = args.out / "model"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(SHIPPED_DIR, model)

    started = time.perf_counter()
    raw = Proposer.from_pretrained(model, device="cpu")
    fit_predictions = collect_predictions(raw, fit_set, tasks=TASKS, batch_size=32)
    calibration = Calibration.fit(
        score_pairs(fit_set, fit_predictions, TASKS, raw=True), fingerprint=weights_fingerprint(model), score=raw.score
    )
    before = score_predictions(held_out, collect_predictions(raw, held_out, tasks=TASKS, batch_size=32), tasks=TASKS)
    calibration.save(model)
    calibrated = Proposer.from_pretrained(model, device="cpu")
    after_predictions = collect_predictions(calibrated, held_out, tasks=TASKS, batch_size=32)
    after = score_predictions(held_out, after_predictions, tasks=TASKS)
    print(
        json.dumps(
            {
                "images": {"fit": len(fit_set.images), "held_out": len(held_out.images)},
                "max_shapes": args.max_shapes,
                "raw": quality(before),
                "calibrated": quality(after),
                "calibration_points": {t.value: len(c.x) for t, c in calibration.tasks.items()},
                "seconds": round(time.perf_counter() - started, 1),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
