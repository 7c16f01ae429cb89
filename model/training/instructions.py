"""COCO annotations → MiniGPT-v2 stage-3 instruction/answer pairs, in the formats of the official stage-3 datasets
(minigpt4/datasets/datasets/*.py in the official MiniGPT-4 repository).

Four formats, as the official datasets write them:

- ``[detection] {category}`` → ``<p>{category}</p> {box}<delim>{box}…``: every box of that category in the image
  (the phrase-to-object format, one space after ``</p>``);
- ``[refer] {phrase}`` through one of the seven refer templates → ``{box}``: the annotation's referring phrase, or
  the category name where that category has exactly one box in the image;
- ``[identify] {box}`` through one of the seven identify templates → the category name (default) or the phrase;
- ``[grounding]`` through one of the four grounded-caption templates → every referable object of the image as
  ``<p>{phrase}</p> {box}``, in reading order, joined by spaces: a grounded caption made of the phrases alone (the
  official Flickr30k captions have words between them, which COCO boxes do not).

Coordinates use the official quantisation, int(v / dim * 100), per axis of the upright image.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from ..annotations import Annotation, Dataset, ImageRecord, Task
from ..grammar import Grid, format_box, format_phrase, pixels_to_grid
from ..prompts import (
    DEFAULT_QUERIES,
    DEFAULT_TEMPLATES,
    GROUNDING_TRAINING_TEMPLATES,
    IDENTIFY_TRAINING_TEMPLATES,
    REFER_TRAINING_TEMPLATES,
)

DEFAULT_TASKS = (Task.detection, Task.refer, Task.identify)  # what `finetune` and a recipe dataset build unless told
TRAINABLE_TASKS = (*DEFAULT_TASKS, Task.grounding)

_CAPTION_PUNCT = re.compile(r"[.!\"()*#:;~]")
_SPACES = re.compile(r"\s{2,}")


class TemplateChoice(str, Enum):
    """Which instruction wording a sample gets."""

    pool = "pool"  # a random template from the official stage-3 pool, as in training
    default = "default"  # always the template `propose` uses at inference


class IdentifyAnswer(str, Enum):
    category = "category"  # what a labeller needs: the label for the drawn box
    phrase = "phrase"  # the official InvRefCOCO target, falling back to the category


@dataclass(frozen=True)
class InstructionSample:
    """One training example: an image, the instruction inside ``[INST] … [/INST]``, and the target answer."""

    image_path: Path
    task: Task
    instruction: str
    answer: str


def blip_caption(text: str, max_words: int = 50) -> str:
    """The official phrase normalisation: lowercase, some punctuation to spaces, spaces collapsed, ≤ 50 words."""
    text = _SPACES.sub(" ", _CAPTION_PUNCT.sub(" ", text.lower())).rstrip("\n").strip(" ")
    return " ".join(text.split(" ")[:max_words])


def _grid(annotation: Annotation, record: ImageRecord) -> Grid:
    return pixels_to_grid(annotation.box, record.width, record.height)


def _usable(grid: Grid) -> bool:
    # A box thinner than one grid cell cannot be written as a valid box; the official data has none either.
    return grid[0] < grid[2] and grid[1] < grid[3]


def detection_samples(record: ImageRecord, absent: Sequence[str] = ()) -> list[InstructionSample]:
    """One ``[detection] {category}`` sample per category present, boxes in reading order (left to right).

    Each name in `absent` (a category with no box in this image) gets a sample whose answer is empty: the model
    learns to answer nothing rather than invent a box. The official data has no such samples; it is opt-in.
    """
    by_label: dict[str, list[Grid]] = defaultdict(list)
    for annotation in record.annotations:
        grid = _grid(annotation, record)
        if _usable(grid):
            by_label[annotation.label].append(grid)
    samples = []
    for label, grids in by_label.items():
        grids.sort()
        instruction = DEFAULT_TEMPLATES[Task.detection].format(query=label)
        samples.append(InstructionSample(record.path, Task.detection, instruction, format_phrase(label, grids)))
    present = {a.label for a in record.annotations}
    for label in absent:
        if label not in present:
            instruction = DEFAULT_TEMPLATES[Task.detection].format(query=label)
            samples.append(InstructionSample(record.path, Task.detection, instruction, ""))
    return samples


def refer_query(annotation: Annotation, record: ImageRecord) -> str | None:
    """The referring expression for one annotation, or None when it has no phrase and its category is not unique."""
    if annotation.phrase and annotation.phrase.strip():
        return blip_caption(annotation.phrase)
    same = sum(1 for other in record.annotations if other.label == annotation.label)
    return annotation.label if same == 1 else None


def refer_samples(record: ImageRecord, rng: random.Random, templates: TemplateChoice) -> list[InstructionSample]:
    samples = []
    for annotation in record.annotations:
        query = refer_query(annotation, record)
        grid = _grid(annotation, record)
        if query is None or not _usable(grid):
            continue
        if templates is TemplateChoice.pool:
            instruction = rng.choice(REFER_TRAINING_TEMPLATES).format(query)
        else:
            instruction = DEFAULT_TEMPLATES[Task.refer].format(query=query)
        samples.append(InstructionSample(record.path, Task.refer, instruction, format_box(grid)))
    return samples


def identify_samples(
    record: ImageRecord, rng: random.Random, templates: TemplateChoice, answer: IdentifyAnswer
) -> list[InstructionSample]:
    samples = []
    for annotation in record.annotations:
        grid = _grid(annotation, record)
        if not _usable(grid):
            continue
        box = format_box(grid)
        if templates is TemplateChoice.pool:
            instruction = rng.choice(IDENTIFY_TRAINING_TEMPLATES).format(box)
        else:
            instruction = DEFAULT_TEMPLATES[Task.identify].format(box=box)
        target = annotation.label
        if answer is IdentifyAnswer.phrase and annotation.phrase and annotation.phrase.strip():
            target = blip_caption(annotation.phrase)
        samples.append(InstructionSample(record.path, Task.identify, instruction, target))
    return samples


def grounding_samples(record: ImageRecord, rng: random.Random, templates: TemplateChoice) -> list[InstructionSample]:
    """One ``[grounding]`` sample per image with at least one referable object (a phrase, or a unique category)."""
    parts = []
    for annotation in record.annotations:
        query = refer_query(annotation, record)
        grid = _grid(annotation, record)
        if query is not None and _usable(grid):
            parts.append((grid[0], grid[1], query, grid))
    if not parts:
        return []
    parts.sort(key=lambda part: (part[0], part[1]))
    texts = []
    for _, _, query, grid in parts:
        try:
            texts.append(format_phrase(query, [grid]))
        except ValueError:  # a phrase with braces or tags could not be parsed back out of the answer
            continue
    if not texts:
        return []
    answer = " ".join(texts)
    if templates is TemplateChoice.pool:
        instruction = rng.choice(GROUNDING_TRAINING_TEMPLATES)
    else:
        instruction = DEFAULT_TEMPLATES[Task.grounding].format(query=DEFAULT_QUERIES[Task.grounding])
    return [InstructionSample(record.path, Task.grounding, instruction, answer)]


def trainable_tasks(tasks: Iterable[Task | str]) -> list[Task]:
    """The tasks, deduplicated in order; ValueError for none, or for one there is no training format for."""
    tasks = list(dict.fromkeys(Task(t) for t in tasks))
    if not tasks:
        raise ValueError("choose at least one task to train")
    unknown = [t.value for t in tasks if t not in TRAINABLE_TASKS]
    if unknown:
        raise ValueError(
            f"cannot build training samples for task(s) {', '.join(unknown)}; choose from "
            + ", ".join(t.value for t in TRAINABLE_TASKS)
        )
    return tasks


def build_samples(
    dataset: Dataset,
    *,
    tasks: Iterable[Task] = DEFAULT_TASKS,
    rng: random.Random | None = None,
    templates: TemplateChoice = TemplateChoice.pool,
    identify_answer: IdentifyAnswer = IdentifyAnswer.category,
    detection_negatives: bool = False,
) -> list[InstructionSample]:
    """Every sample the dataset gives for `tasks`, image by image. `rng` picks templates (seed it per epoch).

    With `detection_negatives`, every dataset category absent from an image also gets an empty-answer
    ``[detection]`` sample (see :func:`detection_samples`).
    """
    tasks = trainable_tasks(tasks)
    rng = rng or random.Random(0)
    names = [c.name for c in dataset.categories]
    samples: list[InstructionSample] = []
    for record in dataset.images:
        if Task.detection in tasks:
            samples += detection_samples(record, names if detection_negatives else ())
        if Task.refer in tasks:
            samples += refer_samples(record, rng, templates)
        if Task.identify in tasks:
            samples += identify_samples(record, rng, templates, identify_answer)
        if Task.grounding in tasks:  # last: the template draws of the other tasks do not depend on it
            samples += grounding_samples(record, rng, templates)
    return samples


def task_counts(samples: Sequence[InstructionSample]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for sample in samples:
        counts[sample.task.value] += 1
    return dict(counts)
