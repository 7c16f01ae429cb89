"""Recipe datasets → :class:`~model.annotations.Dataset`, one reader per kind.

- ``coco``: :func:`model.coco.read_coco`.
- ``label_studio``: a Label Studio JSON export (Export → JSON): per task the most recent non-cancelled annotation's
  rectangles (percent geometry, as :func:`model.regions.value_to_box` reads it), the image found by its file name
  under ``images``.
- ``corrections``: the ML backend's corrections store folder. The backend keeps ``annotations.json`` (COCO, file
  names relative to the folder) up to date from its database, atomically, so it is read as COCO; reading it here
  keeps `model` free of the backend.
- ``autolabel``: an `autolabel` output folder's ``proposals.coco.json``, images where its ``summary.json`` says the
  run read them (or ``images``).
- ``distill``: not read but made, by the model the stage starts from (:mod:`model.training.distill`).
- ``shapes``: generated with :func:`model.synthetic.shapes.make_shapes` into the run folder, once; the same settings
  give the same files, so a resumed run regenerates nothing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from ..annotations import Annotation, Dataset, ImageRecord
from ..coco import MAX_IMAGE_SIDE, categories_from_labels, read_coco
from ..regions import value_to_box
from .recipe import DatasetKind, DatasetSpec, RecipeError

CORRECTIONS_COCO = "annotations.json"  # ml_backend/corrections.py: COCO_NAME
AUTOLABEL_COCO = "proposals.coco.json"  # autolabel/outputs.py: COCO_NAME
AUTOLABEL_SUMMARY = "summary.json"


def load_dataset(spec: DatasetSpec, work: str | os.PathLike) -> Dataset:
    """Read (or, for shapes, generate under `work`) one recipe dataset, boxes below ``min_score`` dropped."""
    kind = spec.kind
    if kind is DatasetKind.coco:
        dataset = read_coco(_path(spec), spec.images)
    elif kind is DatasetKind.corrections:
        folder = _path(spec)
        coco = folder / CORRECTIONS_COCO
        if not coco.is_file():
            raise RecipeError(
                f"dataset {spec.name!r}: {folder} has no {CORRECTIONS_COCO}; point `path` at the folder the backend "
                "was started with (--corrections), after at least one correction"
            )
        dataset = read_coco(coco, folder)
    elif kind is DatasetKind.autolabel:
        dataset = read_coco(*_autolabel_files(spec))
    elif kind is DatasetKind.label_studio:
        dataset = read_label_studio_export(_path(spec), spec.images)
    elif kind is DatasetKind.distill:
        raise RecipeError(f"dataset {spec.name!r}: a distill dataset is made by the run (runner.stage_data), not read")
    else:
        dataset = _shapes(spec, Path(work))
    if spec.min_score is not None:
        dataset = keep_confident(dataset, spec.min_score)
    return dataset


def _path(spec: DatasetSpec) -> Path:
    assert spec.path is not None  # DatasetSpec requires it for every kind but shapes
    return Path(spec.path)


def _autolabel_files(spec: DatasetSpec) -> tuple[Path, Path]:
    folder = _path(spec)
    coco = folder / AUTOLABEL_COCO
    if not coco.is_file():
        raise RecipeError(f"dataset {spec.name!r}: {folder} has no {AUTOLABEL_COCO}; is it an autolabel --out folder?")
    if spec.images:
        return coco, Path(spec.images)
    try:
        source = Path(json.loads((folder / AUTOLABEL_SUMMARY).read_text())["source"])
    except (OSError, ValueError, KeyError, TypeError):
        raise RecipeError(
            f"dataset {spec.name!r}: {folder / AUTOLABEL_SUMMARY} does not say where the images are; set `images`"
        ) from None
    return coco, source if source.is_dir() else source.parent


def keep_confident(dataset: Dataset, min_score: float) -> Dataset:
    # A box without a score was drawn or checked by a person: always kept.
    images = [
        record.model_copy(
            update={"annotations": [a for a in record.annotations if a.score is None or a.score >= min_score]}
        )
        for record in dataset.images
    ]
    return dataset.model_copy(update={"images": images})


def _shapes(spec: DatasetSpec, work: Path) -> Dataset:
    from ..synthetic.shapes import make_shapes

    settings = spec.shapes
    assert settings is not None  # DatasetSpec fills the defaults for kind shapes
    folder = work / spec.name
    stamp = folder / "settings.json"
    wanted = settings.model_dump_json()
    coco = folder / "annotations.json"
    if not (stamp.is_file() and stamp.read_text() == wanted and coco.is_file()):
        coco = make_shapes(
            folder,
            images=settings.images,
            seed=settings.seed,
            min_shapes=settings.min_shapes,
            max_shapes=settings.max_shapes,
            exif_fraction=settings.exif_fraction,
            names=settings.rename or None,
        )
        stamp.write_text(wanted)  # written last: a generation cut short is redone
    return read_coco(coco)


# --- Label Studio JSON export ----------------------------------------------------------------------------------------


def read_label_studio_export(path: str | os.PathLike, images: str | os.PathLike | None = None) -> Dataset:
    """A Label Studio JSON export → Dataset. Rectangles of the most recent non-cancelled annotation per task; the
    image is the file named like the task's image URL's last part, under `images` (default: the export's folder)."""
    path = Path(path)
    folder = Path(images) if images is not None else path.parent
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecipeError(f"Label Studio export {path} not found") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise RecipeError(f"cannot read Label Studio export {path}: {err}") from None
    if not isinstance(tasks, list):
        raise RecipeError(f"{path.name} is not a Label Studio JSON export (a list of tasks); use Export → JSON")
    records, labels = [], []
    for number, task in enumerate(tasks, 1):
        record = _ls_record(task, folder, f"{path.name}: task {number}")
        if record is not None:
            records.append(record)
            labels += [a.label for a in record.annotations]
    return Dataset(categories=categories_from_labels(labels), images=records)


def _ls_record(task: Any, folder: Path, where: str) -> ImageRecord | None:
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise RecipeError(f"{where} has no 'data'; is this a Label Studio JSON export?")
    given = task.get("annotations") or []
    if not isinstance(given, list):
        raise RecipeError(f"{where}: 'annotations' is not a list; is this a Label Studio JSON export?")
    annotations = [a for a in given if isinstance(a, dict) and not a.get("was_cancelled")]
    if not annotations:
        return None  # never labelled: nothing to learn from it (an empty annotation still says "no objects")
    latest = max(annotations, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0))
    url = task["data"].get("image")
    if not isinstance(url, str):
        strings = [v for v in task["data"].values() if isinstance(v, str)]
        url = strings[0] if len(strings) == 1 else None
    if url is None:
        raise RecipeError(f"{where}: no image URL in 'data'; name it 'image' as the default labeling config does")
    try:
        name = Path(unquote(urlparse(url).path)).name
    except ValueError:  # not a URL urllib can split (e.g. an unclosed IPv6 bracket)
        name = ""
    if not name or "\0" in name:
        raise RecipeError(f"{where}: cannot take an image file name from {url[:80]!r}")
    image = folder / name
    size, boxes = None, []
    regions = latest.get("result") or []
    for region in regions if isinstance(regions, list) else []:
        if not isinstance(region, dict) or region.get("type") != "rectanglelabels":
            continue
        value = region.get("value")
        names = value.get("rectanglelabels") if isinstance(value, dict) else None
        width, height = region.get("original_width"), region.get("original_height")
        if not (isinstance(names, list) and names and isinstance(names[0], str) and names[0].strip()):
            continue
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_IMAGE_SIDE for v in (width, height)):
            continue
        box = value_to_box(value, width, height)
        if box is not None:
            size = (width, height)
            boxes.append(Annotation(box=box, label=names[0]))
    if size is None:
        size = _image_size(image)
    return ImageRecord(path=image, width=size[0], height=size[1], annotations=boxes, reviewed=True)


def _image_size(image: Path) -> tuple[int, int]:
    from ..images import MODEL_FIT_PIXELS, load_image

    loaded = load_image(image, fit_pixels=MODEL_FIT_PIXELS)
    return loaded.width, loaded.height
