"""The files of an autolabel run, written atomically from the journal: after a crash and a resume they are the
files a clean run writes.

* ``proposals.coco.json``: the answered images and their boxes (:func:`model.coco.write_coco`); per box the score,
  and under ``attributes`` the prompt, the model version, the score again and, when the model has a calibration
  (:mod:`model.calibration`), the ``raw_score`` before it (an extension pycocotools ignores).
* ``label-studio-tasks.json``: one task per image with a ``predictions`` entry (percent coordinates,
  ``model_version``, a score per region and per prediction), checked with label-studio-sdk when it is installed.
* ``label-config.xml``: a Label Studio labeling config for those tasks (the one given, or one built from the labels).
* ``failures.jsonl``: ``{"key", "image", "reason"}`` per image that could not be answered.
* ``summary.json``: counts, this invocation's images/s and wall time, the model version.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from model.annotations import Annotation, Box, Dataset, ImageRecord, Origin
from model.coco import categories_from_labels, write_coco
from model.errors import MiniGPTError
from model.files import dump_json, write_atomic, write_text_atomic
from model.regions import prediction, rectangle_region

from .asks import Asks, all_labels
from .journal import Result
from .sources import LOCAL_FILES, Item, Source

__all__ = [
    "COCO_NAME",
    "FAILURES_NAME",
    "LABEL_CONFIG_NAME",
    "SUMMARY_NAME",
    "TASKS_NAME",
    "task_prediction",
    "write_outputs",
]

COCO_NAME = "proposals.coco.json"
TASKS_NAME = "label-studio-tasks.json"
LABEL_CONFIG_NAME = "label-config.xml"
FAILURES_NAME = "failures.jsonl"
SUMMARY_NAME = "summary.json"


def write_outputs(
    out: Path,
    source: Source,
    asks: Asks,
    results: dict[str, Result],
    *,
    model_version: str,
    label_config: str | None,
    root: Path | None,
    run_stats: dict[str, Any],
) -> dict[str, Any]:
    """Write every output file from ``results`` (the journal's), in the source's order; returns the summary."""
    items = [item for item in source.items if item.key in results]
    answered = [(item, results[item.key]) for item in items if results[item.key].error is None]
    failed = [(item, results[item.key]) for item in items if results[item.key].error is not None]
    labels = all_labels(asks, source.items)
    config = label_config or default_label_config(labels, asks)

    images_dir = source.location if source.kind == "folder" else source.location.parent
    # a live project's images are not files here: the COCO file names them as their tasks do
    file_names = [item.image for item, _ in answered] if any(item.url is not None for item in items) else None
    write_coco(_dataset(answered, labels, model_version), out / COCO_NAME, images_dir, file_names=file_names)
    tasks = [_task(item, results[item.key], asks, model_version, root) for item in items]
    _validate(tasks, config)
    write_atomic(out / TASKS_NAME, lambda fp: dump_json(tasks, fp))
    write_text_atomic(out / LABEL_CONFIG_NAME, config)
    lines = "".join(
        json.dumps({"key": item.key, "image": result.image, "reason": result.error}) + "\n" for item, result in failed
    )
    write_text_atomic(out / FAILURES_NAME, lines)
    summary = {
        "images": len(source.items),
        "answered": len(answered),
        "failed": len(failed),
        "pending": sum(item.key not in results and item.key not in source.skip for item in source.items),
        "boxes": sum(len(result.proposals or ()) for _, result in answered),
        "model_version": model_version,
        "task": asks.task.value,
        "source": source.name or str(source.location),
        **run_stats,
    }
    write_text_atomic(out / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    return summary


def _dataset(answered: Sequence[tuple[Item, Result]], labels: list[str], model_version: str) -> Dataset:
    images = []
    for item, result in answered:
        annotations = [
            Annotation(
                box=Box.from_xyxy(p["bbox"]),
                label=p["label"],
                score=p["score"],
                origin=Origin.proposed,  # nobody has reviewed it yet
                prompt=p["prompt"],
                model_version=model_version,
                attributes={"score": p["score"]} | ({"raw_score": p["raw_score"]} if "raw_score" in p else {}),
            )
            for p in result.proposals or ()
        ]
        images.append(ImageRecord(path=item.path, width=result.width, height=result.height, annotations=annotations))
    return Dataset(categories=categories_from_labels(labels), images=images)


def _task(item: Item, result: Result, asks: Asks, model_version: str, root: Path | None) -> dict[str, Any]:
    if item.task is not None:
        task: dict[str, Any] = {"data": item.task["data"]}  # not its old annotations or predictions
        if "id" in item.task:
            task["id"] = item.task["id"]
    else:
        task = {"data": {asks.names.image_key: _image_reference(item.path, root)}}
    answer = task_prediction(item, result, asks, model_version)
    task["predictions"] = [answer] if answer is not None else []
    return task


def task_prediction(item: Item, result: Result, asks: Asks, model_version: str) -> dict[str, Any] | None:
    """The Label Studio prediction of one answered image (None for a failed one): the import file's and the one
    pushed into a live project, so both are the same."""
    if result.error is not None or result.width is None or result.height is None:
        return None
    regions = [
        rectangle_region(
            Box.from_xyxy(p["bbox"]),
            p["label"],
            p["score"],
            width=result.width,
            height=result.height,
            from_name=asks.names.from_name,
            to_name=asks.names.to_name,
            ident=f"{item.key}#{n}".replace(" ", "-"),  # stable: the same on every rewrite from the journal
        )
        for n, p in enumerate(result.proposals or ())
    ]
    return prediction(regions, model_version)  # scored as the backend scores one


def _image_reference(path: Path, root: Path | None) -> str:
    """Label Studio's local-files URL when the image is under ``root``, else the path."""
    if root is not None:
        try:
            relative = Path(os.path.abspath(path)).relative_to(root)
        except ValueError:
            return str(path)
        return f"{LOCAL_FILES}?d={relative.as_posix()}"
    return str(path)


def default_label_config(labels: Sequence[str], asks: Asks) -> str:
    names = asks.names
    children = "".join(f"\n    <Label value={quoteattr(label)}/>" for label in labels)
    return (
        f"<View>\n  <Image name={quoteattr(names.to_name)} value={quoteattr('$' + names.image_key)}/>\n"
        f"  <RectangleLabels name={quoteattr(names.from_name)} toName={quoteattr(names.to_name)}>{children}\n"
        "  </RectangleLabels>\n</View>\n"
    )


def _validate(tasks: Sequence[dict[str, Any]], config: str) -> None:
    """label-studio-sdk's verdict on every prediction, when the SDK is installed (the [backend] extra)."""
    try:
        from label_studio_sdk.label_interface import LabelInterface
    except ImportError:
        return
    interface = LabelInterface(config)
    for task in tasks:
        for predicted in task["predictions"]:
            verdict = interface.validate_prediction(predicted, return_errors=True)
            if verdict is not True and verdict:
                raise MiniGPTError(f"the Label Studio prediction for {task['data']} is invalid: {verdict[0]}")
