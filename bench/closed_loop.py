"""The closed loop, measured: corrections → the correction recipe → evaluate on held-out images. Prints JSON.

The corrections are synthetic shapes scenes in a labeller's own taxonomy (the shapes the shipped model knows as
square, circle and triangle are labelled box, disc and wedge, labels and phrases) and crowded (5-8 shapes a scene,
where the shipped model saw 1-4). For each seed, a fresh set of corrected images is generated (laid out as the
backend's corrections store: ``annotations.json`` and ``images/``), and each variant trains from the shipped model
with ``model/recipes/corrections.yaml``:

- ``no-replay``: the recipe with its replay dataset removed (the corrections alone: what `finetune` does);
- ``replay``: the recipe as shipped (corrections mixed with the base model's own confident answers, ``distill``);
- ``replay-base-names``: as ``replay``, the base model asked in its own taxonomy (square, circle, triangle).

Every model is scored on one held-out set of ``--heldout-images`` scenes (same world, never trained on). Each metric
comes with a 95% interval from a bootstrap over held-out images (``--bootstrap`` resamples), and each change from the
base model with the paired bootstrap interval of the difference (the same resampled images before and after), so
"fell by more than its interval" means the interval of the change lies wholly below 0.

    python bench/closed_loop.py [--train-images 300] [--heldout-images 300] [--seeds 0,1,2] [--steps N] [--base M]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from model.annotations import Dataset, Task
from model.coco import read_coco
from model.evaluation.metrics import acceptance, iou
from model.evaluation.runner import collect_predictions, score_predictions
from model.proposer import Proposer
from model.synthetic.shapes import CATEGORIES, make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR
from model.training.recipe import DatasetKind, load_recipe
from model.training.runner import train_recipe

RENAMES = {"square": "box", "circle": "disc", "triangle": "wedge"}
RECIPE = Path(__file__).resolve().parents[1] / "model" / "recipes" / "corrections.yaml"
VARIANTS = ("no-replay", "replay", "replay-base-names")
HELDOUT_SEED = 777_000  # apart from every training seed below
METRICS = ("overall_acceptance_rate", "refer_acc_iou50", "detection_acceptance_rate", "detection_coverage")


def crowded(out: Path, images: int, seed: int) -> Dataset:
    return read_coco(make_shapes(out, images=images, seed=seed, min_shapes=5, max_shapes=8, names=RENAMES))


def per_image(dataset: Dataset, model: str | Path, batch_size: int) -> tuple[dict, np.ndarray]:
    """The report's headline figures and, per held-out image, the counts they are sums of."""
    proposer = Proposer.from_pretrained(model, device="cpu")
    tasks = (Task.refer, Task.detection)
    predictions = collect_predictions(proposer, dataset, tasks=tasks, batch_size=batch_size)
    report = score_predictions(dataset, predictions, tasks=tasks)
    # columns: refer n, refer proposals, refer kept, detection proposals, detection kept, ground-truth boxes
    counts = np.zeros((len(dataset.images), 6), dtype=np.int64)
    for p in predictions.refer:
        counts[p.image_index, 0] += 1
        if p.predicted is not None:
            counts[p.image_index, 1] += 1
            counts[p.image_index, 2] += int(iou(p.predicted, p.truth) >= 0.5)
    by_image: dict[int, list] = {}
    for d in predictions.detections:
        by_image.setdefault(d.image_index, []).append(d.model_copy(update={"image_index": 0}))
    for i, record in enumerate(dataset.images):
        one = dataset.model_copy(update={"images": [record]})
        accepted = acceptance(one, by_image.get(i, []))  # matching never crosses images: per-image sums are exact
        counts[i, 3:] = accepted.n_proposals, accepted.n_kept, accepted.n_gt
    summary = {
        "overall_acceptance_rate": report.overall.acceptance_rate,
        "refer_acc_iou50": report.refer.acc_iou50 if report.refer else None,
        "detection_acceptance_rate": report.detection.acceptance_rate if report.detection else None,
        "detection_coverage": report.detection.coverage if report.detection else None,
        "detection_AP50": report.detection.ap50 if report.detection else None,
    }
    return summary, counts


def rates(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric from summed counts; `counts` is (..., images, 6), sums over the images axis."""
    s = counts.sum(axis=-2).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "overall_acceptance_rate": (s[..., 2] + s[..., 4]) / (s[..., 1] + s[..., 3]),
            "refer_acc_iou50": s[..., 2] / s[..., 0],
            "detection_acceptance_rate": s[..., 4] / s[..., 3],
            "detection_coverage": s[..., 4] / s[..., 5],
        }


def intervals(before: np.ndarray, after: np.ndarray | None, resamples: int, seed: int = 0) -> dict:
    """95% bootstrap intervals over held-out images of each metric and (paired) of its change."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(before), size=(resamples, len(before)))
    out: dict = {}
    b = rates(before[picks])
    a = rates(after[picks]) if after is not None else None
    for name in METRICS:
        entry = {"ci95": [round(float(v), 4) for v in np.nanpercentile((a or b)[name], [2.5, 97.5])]}
        if a is not None:
            entry["change_ci95"] = [round(float(v), 4) for v in np.nanpercentile(a[name] - b[name], [2.5, 97.5])]
        out[name] = entry
    return out


def variant_recipe(
    name: str,
    data_root: Path,
    steps: int | None,
    seed: int,
    replay_ratio: float,
    min_score: float,
    overrides: list[str],
):
    recipe = load_recipe(RECIPE, data_root=data_root, overrides=overrides)
    stage = recipe.stages[0]
    corrected = next(d for d in stage.datasets if d.kind is DatasetKind.corrections)
    replay = next(d for d in stage.datasets if d.kind is DatasetKind.distill)
    if name == "no-replay":
        datasets = [corrected.model_copy(update={"ratio": 1.0})]
    else:
        categories = list(CATEGORIES) if name == "replay-base-names" else None
        datasets = [
            corrected.model_copy(update={"ratio": 1.0 - replay_ratio}),
            replay.model_copy(update={"ratio": replay_ratio, "min_score": min_score, "categories": categories}),
        ]
    schedule = stage.schedule if steps is None else stage.schedule.model_copy(update={"steps": steps})
    stage = stage.model_copy(update={"datasets": datasets, "schedule": schedule})
    return recipe.model_copy(update={"stages": [stage], "seed": seed, "save_every": 10**9})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=300, help="corrected images per seed")
    parser.add_argument("--heldout-images", type=int, default=300)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's own")
    parser.add_argument("--variants", default="no-replay,replay")
    parser.add_argument("--replay-ratio", type=float, default=0.3)
    parser.add_argument("--min-score", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=64, help="evaluation batch")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/closed-loop"))
    parser.add_argument(
        "--base", type=Path, default=SHIPPED_DIR, help="the model the corrections tune (default: shipped)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
                        help="change the recipe as `train --set` does (before the variant's own changes)")  # fmt: skip
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")

    held_out = crowded(args.out / "heldout", args.heldout_images, HELDOUT_SEED)
    started = time.perf_counter()
    base, base_counts = per_image(held_out, args.base, args.batch_size)
    result: dict = {
        "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        | {"shapes_per_scene": "5-8", "renames": RENAMES, "recipe": str(RECIPE)},
        "heldout_images": len(held_out.images),
        "base": {
            "metrics": base,
            "intervals": intervals(base_counts, None, args.bootstrap),
            "eval_seconds": round(time.perf_counter() - started, 1),
        },
        "seeds": {},
    }
    for seed in (int(s) for s in args.seeds.split(",")):
        root = args.out / f"seed-{seed}"
        crowded(root / "corrections", args.train_images, 4242 + seed)
        runs = {}
        for name in variants:
            recipe = variant_recipe(name, root, args.steps, seed, args.replay_ratio, args.min_score, args.overrides)
            started = time.perf_counter()
            trained = train_recipe(recipe, root / name, base=args.base, device="cpu", progress=False)
            seconds = time.perf_counter() - started
            started = time.perf_counter()
            metrics, counts = per_image(held_out, root / name, args.batch_size)
            stage = next(iter(trained.stages.values()))
            runs[name] = {
                "metrics": metrics,
                "change": {m: round(metrics[m] - base[m], 4) for m in METRICS},
                "intervals": intervals(base_counts, counts, args.bootstrap),
                "train_seconds": round(seconds, 1),
                "eval_seconds": round(time.perf_counter() - started, 1),
                "samples_per_epoch": stage.samples_per_epoch,
                "drawn": stage.drawn,
            }
            print(json.dumps({"seed": seed, "variant": name, **runs[name]}), flush=True)
        result["seeds"][seed] = runs
    result["mean_change"] = {
        name: {m: round(float(np.mean([r[name]["change"][m] for r in result["seeds"].values()])), 4) for m in METRICS}
        for name in variants
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
