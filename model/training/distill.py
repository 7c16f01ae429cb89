"""Self-distillation replay: the model's own confident answers on a dataset's images, as training data.

A recipe dataset of kind ``distill`` names a ``source`` dataset of its stage (the labeller's corrections, say). Before
the stage trains, the model the stage starts from answers ``[detection] {category}`` for each category on each of the
source's images, with the prompts `propose` uses; every box it gives with a score of at least ``min_score`` (the
geometric mean of its tokens' probabilities, :data:`REPLAY_SCORE`) becomes an annotation of that category. Mixed in
by ratio, these samples remind the model of what it already answered well while the corrections teach it what it
answered badly (fine-tuning on the corrections alone made it forget: the
closed loop in bench/closed_loop.py measures both).

Why in-process rather than an ``autolabel`` run read as a dataset: the answers must come from the model the stage
starts from, which only the run knows (``train --base`` may name any model); one command then does the whole job, and
`model` stays free of the `autolabel` surface. The answers are written to the stage's data folder once (a COCO file
with scores, and a stamp naming the model and settings), so a resumed run reads the same samples without asking
again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from ..annotations import Annotation, Category, Dataset, Task
from ..coco import read_coco, write_coco
from ..files import write_text_atomic
from .recipe import DatasetSpec, RecipeError
from .sources import keep_confident

# min_score is a geometric mean of the box tokens' probabilities ("mean" in model.scoring): the replay thresholds
# were measured with it (bench/closed_loop.py), and the served default score runs lower on the same boxes
REPLAY_SCORE = "mean"

log = logging.getLogger(__name__)

DISTILLED_COCO = "distilled.json"
STAMP = "distilled.stamp"
BATCH_SIZE = 32


def distill_categories(spec: DatasetSpec, source: Dataset) -> list[str]:
    """The categories asked: the spec's, else the source dataset's (the prompts the labeller's project used)."""
    names = list(dict.fromkeys(spec.categories or [c.name for c in source.categories]))
    if not names:
        raise RecipeError(f"dataset {spec.name!r}: its source has no categories to ask about; list `categories`")
    return names


def distill_dataset(
    spec: DatasetSpec,
    source: Dataset,
    model: str | os.PathLike,
    work: str | os.PathLike,
    *,
    device: str | torch.device | None = "auto",
) -> Dataset:
    """The model's answers (boxes scored at least ``spec.min_score``) on `source`'s images, cached under `work`."""
    names = distill_categories(spec, source)
    folder = Path(work) / spec.name
    coco, stamp = folder / DISTILLED_COCO, folder / STAMP
    wanted = _stamp(spec, source, model, names)
    if coco.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        return read_coco(coco)
    answers = _answer(source, model, names, device)
    kept = keep_confident(answers, spec.min_score) if spec.min_score is not None else answers
    boxes = sum(len(r.annotations) for r in kept.images)
    log.info("%s: %d of the model's %d boxes kept (score >= %s)", spec.name, boxes,
             sum(len(r.annotations) for r in answers.images), spec.min_score)  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    write_coco(kept, coco, images_dir=folder)
    write_text_atomic(stamp, wanted)  # written last: answers cut short are asked again
    return read_coco(coco)


def _answer(source: Dataset, model: str | os.PathLike, names: list[str], device) -> Dataset:
    from ..evaluation.runner import collect_predictions
    from ..proposer import Proposer

    categories = [Category(id=i, name=name) for i, name in enumerate(names, start=1)]
    asked = Dataset(categories=categories, images=[r.model_copy(update={"annotations": []}) for r in source.images])
    proposer = Proposer.from_pretrained(model, device=device, score=REPLAY_SCORE)
    predictions = collect_predictions(proposer, asked, tasks=[Task.detection], batch_size=BATCH_SIZE)
    del proposer
    found: list[list[Annotation]] = [[] for _ in asked.images]
    for d in predictions.detections:
        found[d.image_index].append(Annotation(box=d.box, label=d.label, score=d.score))
    images = [r.model_copy(update={"annotations": a}) for r, a in zip(asked.images, found, strict=True)]
    return asked.model_copy(update={"images": images})


def _stamp(spec: DatasetSpec, source: Dataset, model: str | os.PathLike, names: list[str]) -> str:
    """What the answers depend on: the model, the settings and the source's images."""
    path = Path(model)
    reference = str(path.resolve()) if path.exists() else str(model)
    images = hashlib.sha256("\n".join(str(r.path) for r in source.images).encode()).hexdigest()
    return json.dumps(
        {"model": reference, "categories": names, "min_score": spec.min_score, "score": REPLAY_SCORE, "images": images},
        sort_keys=True,
    )
