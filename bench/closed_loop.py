"""The closed loop, measured: corrected COCO → finetune → evaluate on the held-out part. Prints JSON.

The "corrected" data is a synthetic shapes set in a labeller's own taxonomy: the shapes the shipped model knows as
square, circle and triangle are labelled box, disc and wedge (labels and phrases), on scenes it never saw. It is
split by image; the shipped model and its fine-tuned version are scored on the same held-out images with
`evaluate`.

    python bench/closed_loop.py [--images 300] [--steps 300] [--out /tmp/closed-loop]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from model.annotations import Task
from model.coco import read_coco, split_dataset, write_coco
from model.evaluation.runner import evaluate_model
from model.proposer import Proposer
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR
from model.training import FinetuneConfig, finetune

RENAMES = {"square": "box", "circle": "disc", "triangle": "wedge"}


def summary(report) -> dict:
    return {
        "refer_acc_iou50": report.refer.acc_iou50,
        "detection_AP50": report.detection.ap50,
        "detection_acceptance_rate": report.detection.acceptance_rate,
        "detection_coverage": report.detection.coverage,
        "overall_acceptance_rate": report.overall.acceptance_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=4242)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--freeze-projection", action="store_true")
    parser.add_argument("--tasks", default="detection,refer,identify")
    parser.add_argument("--detection-negatives", action="store_true")
    parser.add_argument("--keep-names", action="store_true", help="the shipped model's own category names")
    parser.add_argument("--out", type=Path, default=Path("/tmp/closed-loop"))
    args = parser.parse_args()

    coco = make_shapes(
        args.out / "data", images=args.images, seed=args.seed, names=None if args.keep_names else RENAMES
    )
    train, held_out = split_dataset(read_coco(coco), holdout=0.3, seed=0)
    write_coco(train, args.out / "data" / "train.json", images_dir=args.out / "data")
    write_coco(held_out, args.out / "data" / "heldout.json", images_dir=args.out / "data")

    tasks = (Task.refer, Task.detection)
    before = evaluate_model(Proposer.from_pretrained(SHIPPED_DIR, device="cpu"), held_out, tasks=tasks, batch_size=64)
    config = FinetuneConfig(lora_r=args.lora_r, learning_rate=args.learning_rate, min_lr=args.learning_rate / 10,
                            warmup_steps=20, batch_size=16, max_steps=args.steps, save_every=100,
                            train_projection=not args.freeze_projection, tasks=args.tasks.split(","),
                            detection_negatives=args.detection_negatives)  # fmt: skip
    started = time.perf_counter()
    result = finetune(train, SHIPPED_DIR, args.out / "finetuned", config, progress=False)
    seconds = time.perf_counter() - started
    after = evaluate_model(Proposer.from_pretrained(args.out / "finetuned", device="cpu"), held_out, tasks=tasks,
                           batch_size=64)  # fmt: skip
    print(json.dumps({
        "train_images": len(train.images),
        "held_out_images": len(held_out.images),
        "finetune": {"steps": result.steps, "seconds": round(seconds, 1), "config": config.model_dump(mode="json")},
        "before": summary(before),
        "after": summary(after),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
