"""COCO detection files to and from the pydantic data model (:mod:`model.annotations`).

* ``bbox`` is ``[x, y, w, h]`` in pixels of the upright image (EXIF orientation applied), like every box here.
* Reading keeps the file's image order and category ids, takes the category name as the label and keeps the
  optional ``phrase`` (a referring expression) and ``score`` keys. A box that hangs over the image's edge is
  clipped to the image, so every box read lies inside its image. Crowd annotations and boxes with no area (in the
  image) cannot become a :class:`~model.annotations.Box`, so they are skipped and reported, never dropped silently.
  Numbers that are not finite (``Infinity``, ``NaN``, an ``x + width`` that overflows), sizes no image format
  allows, text that is not Unicode and absurdly nested JSON are refused: every later step (training, the
  desktop store, a re-export) would otherwise fail on them one by one.
* Where a box came from travels in a per-annotation ``attributes`` object (an extension key pycocotools passes
  through untouched, as CVAT's exports use it), flat scalars only: ``origin`` (manual, proposed, accepted,
  edited), ``model_version``, ``task``, ``prompt``, ``changed_at`` (ISO 8601) and, for an edited box, the proposal
  it was made from (``original_label``, ``original_score``, ``original_x``/``_y``/``_width``/``_height`` in pixels,
  COCO's x, y, w, h). Reading takes them back into :class:`~model.annotations.Annotation`; a box without them is
  ``manual``. Other scalar attributes are kept as they are.
* Writing numbers images and annotations from 1 in dataset order, takes category ids from
  ``Dataset.categories``, keeps an annotation's other ``attributes`` (e.g. raw score) in the same ``attributes``
  object, and replaces the file atomically, so a crash never leaves half a file
  behind. It refuses values JSON cannot carry (an infinite score or area), so the file stays JSON that every reader
  parses.

Malformed files raise :class:`CocoError`, whose message names the file, the cause and the fix.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import random
import reprlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from model.annotations import Annotation, Box, Category, Dataset, ImageRecord, Origin, OriginalProposal, Task
from model.errors import MiniGPTError
from model.files import dump_json, write_atomic
from model.request import check_text

if TYPE_CHECKING:
    from pycocotools.coco import COCO

__all__ = [
    "CocoError",
    "CocoReadReport",
    "SkippedAnnotation",
    "categories_from_labels",
    "load_with_pycocotools",
    "read_coco",
    "read_coco_with_report",
    "write_coco",
]

logger = logging.getLogger(__name__)

CocoId = int | str  # COCO ids are integers; some exporters write strings, which pycocotools accepts too
MAX_IMAGE_SIDE = 2**31 - 1  # PNG's limit, the largest of any format (JPEG: 65535); larger sizes are not images

# Values quoted in error messages stay short, whatever the file holds (a 10 MB list, 900 nested arrays).
_SHOWN = reprlib.Repr()
_SHOWN.maxlevel, _SHOWN.maxlist, _SHOWN.maxdict, _SHOWN.maxstring, _SHOWN.maxother = 2, 6, 4, 60, 60
_SHOWN.maxlong = 40


class CocoError(MiniGPTError):
    """A COCO file is missing or malformed, or a dataset cannot be written as COCO."""


@dataclass(frozen=True)
class SkippedAnnotation:
    """An annotation in the file that has no counterpart in the dataset, and why."""

    annotation_id: CocoId
    image_id: CocoId
    kind: Literal["crowd", "degenerate"]
    reason: str


@dataclass(frozen=True)
class CocoReadReport:
    """What :func:`read_coco_with_report` read: the dataset, the file's ids for it, and what it skipped."""

    dataset: Dataset
    image_ids: tuple[CocoId, ...]  # the COCO id of dataset.images[i]
    annotation_ids: tuple[tuple[CocoId, ...], ...]  # the COCO id of dataset.images[i].annotations[j]
    skipped: tuple[SkippedAnnotation, ...]


# --------------------------------------------------------------------------------------------------------
# Reading


def read_coco(path: str | os.PathLike[str], images_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Read a COCO detection file into a :class:`Dataset`.

    ``images_dir`` is the folder ``file_name`` is relative to; it defaults to the COCO file's folder.
    Skipped crowd and degenerate annotations are logged as one warning; use :func:`read_coco_with_report`
    to get them as data.

    Raises:
        CocoError: the file is missing, not JSON, or not valid COCO; the message names the cause and the fix.
    """
    return read_coco_with_report(path, images_dir).dataset


def read_coco_with_report(
    path: str | os.PathLike[str], images_dir: str | os.PathLike[str] | None = None
) -> CocoReadReport:
    """Like :func:`read_coco`, but also return the file's ids and the annotations that were skipped."""
    path = Path(path)
    root = Path(images_dir) if images_dir is not None else path.parent
    data = _load_json(path)
    name = str(path)

    raw_categories = _section(data, "categories", name)
    raw_images = _section(data, "images", name)
    raw_annotations = _section(data, "annotations", name)

    categories = [_category(entry, i, name) for i, entry in enumerate(raw_categories)]
    label_of: dict[int, str] = {}
    for category in categories:
        if category.id in label_of:
            raise CocoError(
                f"{name}: category id {_show(category.id)} appears twice in 'categories'; give each a unique id"
            )
        if category.name in label_of.values():
            raise CocoError(
                f"{name}: category name {category.name!r} appears twice in 'categories'; merge them or rename one"
            )
        label_of[category.id] = category.name

    records: dict[CocoId, ImageRecord] = {}
    for i, entry in enumerate(raw_images):
        image_id, record = _image(entry, i, root, name)
        if image_id in records:
            raise CocoError(
                f"{name}: image id {_show(image_id)} appears twice in 'images'; give each image a unique id"
            )
        records[image_id] = record

    annotation_ids: dict[CocoId, list[CocoId]] = {image_id: [] for image_id in records}
    seen: set[CocoId] = set()
    skipped: list[SkippedAnnotation] = []
    for i, entry in enumerate(raw_annotations):
        ann_id, image_id, annotation, skip = _annotation(entry, i, records, label_of, name)
        if ann_id in seen:
            raise CocoError(f"{name}: annotation id {_show(ann_id)} appears twice; give each annotation a unique id")
        seen.add(ann_id)
        if skip is not None:
            skipped.append(skip)
            continue
        assert annotation is not None
        records[image_id].annotations.append(annotation)
        annotation_ids[image_id].append(ann_id)

    if skipped:
        kinds = ", ".join(f"{sum(s.kind == k for s in skipped)} {k}" for k in ("crowd", "degenerate"))
        logger.warning("%s: skipped %d annotations that cannot be boxes (%s)", name, len(skipped), kinds)

    return CocoReadReport(
        dataset=Dataset(categories=categories, images=list(records.values())),
        image_ids=tuple(records),
        annotation_ids=tuple(tuple(ids) for ids in annotation_ids.values()),
        skipped=tuple(skipped),
    )


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8-sig") as fp:  # -sig: tolerate a BOM some Windows editors add
            data = json.load(fp)
    except FileNotFoundError as exc:
        raise CocoError(f"COCO file {str(path)!r} not found; check the path and the working directory") from exc
    except IsADirectoryError as exc:
        raise CocoError(f"COCO path {str(path)!r} is a folder; pass the annotation .json file inside it") from exc
    except json.JSONDecodeError as exc:
        raise CocoError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            "fix the syntax or re-export the file"
        ) from exc
    except UnicodeDecodeError as exc:
        raise CocoError(f"{path}: not UTF-8 text, so not a COCO JSON file; pass the annotation .json file") from exc
    except RecursionError as exc:  # the JSON decoder recurses per nesting level
        raise CocoError(
            f"{path}: its JSON is nested too deeply to be a COCO file (arrays or objects inside each other "
            "hundreds of levels deep); re-export the file"
        ) from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits, which Python refuses to convert
        raise CocoError(f"{path}: not a COCO JSON file ({exc}); re-export the file") from exc
    except OSError as exc:
        raise CocoError(f"cannot read COCO file {str(path)!r} ({exc.strerror or exc}); check its permissions") from exc
    if not isinstance(data, dict):
        raise CocoError(f"{path}: the top level is a JSON {type(data).__name__}, not an object; is this a COCO file?")
    return data


def _section(data: dict[str, Any], key: str, name: str) -> list[Any]:
    if key not in data:
        raise CocoError(
            f"{name}: missing the {key!r} list; a COCO detection file needs images, annotations, categories"
        )
    value = data[key]
    if not isinstance(value, list):
        raise CocoError(f"{name}: {key!r} must be a list, not a JSON {type(value).__name__}; re-export the file")
    return value


def _entry(entry: Any, section: str, index: int, name: str) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise CocoError(f"{name}: {section}[{index}] is not a JSON object; re-export the file")
    return entry


def _show(value: Any) -> str:
    """``repr(value)``, cut short: error messages stay one readable line whatever the file holds."""
    return _SHOWN.repr(value)


def _id(entry: dict[str, Any], section: str, index: int, name: str) -> CocoId:
    value = entry.get("id")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise CocoError(f"{name}: {section}[{index}] has no integer 'id'; give every entry in {section!r} a unique id")
    return value


def _text(value: str, where: str, key: str) -> str:
    """``value`` if the tokenizer and every file format can take it (training would fail on it much later)."""
    try:
        check_text(value)
    except ValueError as err:
        raise CocoError(f"{where} has a {key} that is {err}") from None
    return value


def _number(value: Any) -> float | None:
    """A JSON number as a finite float, else None (a string, a bool, Infinity, NaN, an integer beyond floats)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _category(entry: Any, index: int, name: str) -> Category:
    entry = _entry(entry, "categories", index, name)
    cat_id, cat_name = entry.get("id"), entry.get("name")
    if isinstance(cat_id, bool) or not isinstance(cat_id, int) or cat_id < 1:
        raise CocoError(f"{name}: categories[{index}] has id {_show(cat_id)}; category ids must be integers from 1")
    if not isinstance(cat_name, str) or not cat_name.strip():
        raise CocoError(
            f"{name}: category {_show(cat_id)} has no name; give it a non-empty 'name' (it becomes the label)"
        )
    return Category(id=cat_id, name=_text(cat_name, f"{name}: category {_show(cat_id)}", "name"))


def _image(entry: Any, index: int, root: Path, name: str) -> tuple[CocoId, ImageRecord]:
    entry = _entry(entry, "images", index, name)
    image_id = _id(entry, "images", index, name)
    where = f"{name}: image {_show(image_id)}"
    file_name = entry.get("file_name")
    if not isinstance(file_name, str) or not file_name:
        raise CocoError(f"{where} has no 'file_name'; add the image path relative to the images")
    if "\0" in _text(file_name, where, "file_name"):
        raise CocoError(f"{where} has a file_name with a NUL character, which no path holds; fix the file_name")
    size: list[int] = []
    for key in ("width", "height"):
        value = entry.get(key)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_IMAGE_SIDE:
            raise CocoError(
                f"{where} has {key} {_show(value)}; it must be the upright image's {key} in pixels "
                f"(1 to {MAX_IMAGE_SIDE:,})"
            )
        size.append(value)
    return image_id, ImageRecord(path=root / file_name, width=size[0], height=size[1])


def _annotation(
    entry: Any,
    index: int,
    records: dict[CocoId, ImageRecord],
    label_of: dict[int, str],
    name: str,
) -> tuple[CocoId, CocoId, Annotation | None, SkippedAnnotation | None]:
    """One annotation, or the reason it is skipped; malformed entries raise."""
    entry = _entry(entry, "annotations", index, name)
    ann_id = _id(entry, "annotations", index, name)
    where = f"{name}: annotation {_show(ann_id)}"

    image_id = entry.get("image_id")
    if isinstance(image_id, bool) or not isinstance(image_id, (int, str)) or image_id not in records:
        raise CocoError(
            f"{where} refers to image id {_show(image_id)}, which is not in 'images'; "
            "add that image or remove the annotation"
        )
    category_id = entry.get("category_id")
    if isinstance(category_id, bool) or not isinstance(category_id, int) or category_id not in label_of:
        raise CocoError(
            f"{where} refers to category id {_show(category_id)}, which is not in 'categories'; "
            "add that category or remove the annotation"
        )

    if entry.get("iscrowd"):
        reason = "a crowd region (iscrowd 1) marks many objects, not one box"
        return ann_id, image_id, None, SkippedAnnotation(ann_id, image_id, "crowd", reason)

    bbox = entry.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise CocoError(f"{where} has bbox {_show(bbox)}; it must be a list of four numbers [x, y, width, height]")
    numbers = [_number(v) for v in bbox]
    if any(v is None for v in numbers):
        raise CocoError(
            f"{where} has bbox {_show(bbox)}; it must be four finite numbers [x, y, width, height] in pixels"
        )
    x, y, w, h = (v for v in numbers if v is not None)
    if not (math.isfinite(x + w) and math.isfinite(y + h)):
        raise CocoError(f"{where} has bbox {_show(bbox)}, whose x + width or y + height overflows; fix or remove it")
    if w <= 0 or h <= 0:
        reason = f"the box [x, y, w, h] = {_show(bbox)} has no area"
        return ann_id, image_id, None, SkippedAnnotation(ann_id, image_id, "degenerate", reason)
    record = records[image_id]
    # Clipped to the image, as every box this project makes is: a box hanging over the edge (exporters round
    # outwards) keeps its visible part, one wholly outside has nothing to keep.
    x0, y0 = min(max(x, 0.0), record.width), min(max(y, 0.0), record.height)
    x1, y1 = min(max(x + w, 0.0), record.width), min(max(y + h, 0.0), record.height)
    if not (x0 < x1 and y0 < y1):
        reason = f"the box [x, y, w, h] = {_show(bbox)} has no area inside the {record.width}x{record.height} image"
        return ann_id, image_id, None, SkippedAnnotation(ann_id, image_id, "degenerate", reason)

    phrase = entry.get("phrase")
    if phrase is not None and not isinstance(phrase, str):
        raise CocoError(f"{where} has phrase {_show(phrase)}; it must be a string (a referring expression) or absent")
    score = entry.get("score")
    if score is not None and _number(score) is None:
        raise CocoError(f"{where} has score {_show(score)}; it must be a finite number or absent")
    return (
        ann_id,
        image_id,
        Annotation(
            box=Box(x0=x0, y0=y0, x1=x1, y1=y1),
            label=label_of[category_id],
            phrase=None if phrase is None else _text(phrase, where, "phrase"),
            score=_number(score),
            **_read_attributes(entry.get("attributes"), where),
        ),
        None,
    )


_ORIGINAL_BOX = ("original_x", "original_y", "original_width", "original_height")
_PROVENANCE = ("origin", "model_version", "task", "prompt", "changed_at", "original_label", "original_score")


def _read_attributes(value: Any, where: str) -> dict[str, Any]:
    """Annotation fields from an annotation's ``attributes``: its provenance, and the other scalar attributes.

    Other exporters' attributes that are not scalars (a list, an object) are not carried; a provenance key with a
    value this project never writes is refused with what it must be.
    """
    if not isinstance(value, dict):
        return {}  # absent, or another tool's idea of attributes (a list): nothing this project wrote
    attrs = dict(value)

    def text(key: str) -> str | None:
        got = attrs.pop(key, None)
        if got is not None and not isinstance(got, str):
            raise CocoError(f"{where} has attributes.{key} {_show(got)}; it must be a string or absent")
        return None if got is None else _text(got, where, f"attributes.{key}")

    def choice(key: str, kind: type[Origin] | type[Task]) -> Any:
        got = text(key)
        allowed = [member.value for member in kind]
        if got is not None and got not in allowed:
            raise CocoError(f"{where} has attributes.{key} {got!r}; it must be one of {', '.join(allowed)} or absent")
        return None if got is None else kind(got)

    fields: dict[str, Any] = {
        "origin": choice("origin", Origin) or Origin.manual,
        "task": choice("task", Task),
        "model_version": text("model_version"),
        "prompt": text("prompt"),
    }
    when = text("changed_at")
    try:
        fields["changed_at"] = None if when is None else datetime.fromisoformat(when)
    except ValueError:
        raise CocoError(f"{where} has attributes.changed_at {when!r}; it must be an ISO 8601 time or absent") from None
    corners = [attrs.pop(key, None) for key in _ORIGINAL_BOX]
    numbers = [_number(v) for v in corners]
    label, score = text("original_label"), attrs.pop("original_score", None)
    if score is not None and (_number(score) is None or not 0.0 <= score <= 1.0):
        raise CocoError(f"{where} has attributes.original_score {_show(score)}; it must be from 0 to 1 or absent")
    original_box = None
    if any(v is not None for v in corners):
        try:
            if any(v is None for v in numbers):
                raise ValueError("not four numbers")
            original_box = Box.from_xywh([v for v in numbers if v is not None])  # refuses w, h <= 0 and overflow
        except ValueError:
            raise CocoError(
                f"{where} has original box {_show(corners)}; attributes {', '.join(_ORIGINAL_BOX)} must be four "
                "finite numbers with a positive width and height, or all absent"
            ) from None
    if original_box is not None or label is not None or score is not None:
        fields["original"] = OriginalProposal(box=original_box, label=label, score=_number(score))
    others = {
        key: v
        for key, v in attrs.items()
        if isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))
    }
    fields["attributes"] = others or None
    return fields


def _write_attributes(annotation: Annotation) -> dict[str, Any]:
    """The ``attributes`` object of an annotation: its other attributes, then its provenance (which wins)."""
    attrs: dict[str, Any] = dict(annotation.attributes or {})
    if not annotation.has_provenance:
        return attrs  # a person's box that says nothing more: no attributes, as before provenance existed
    attrs["origin"] = annotation.origin.value
    for key, value in (
        ("model_version", annotation.model_version),
        ("task", annotation.task.value if annotation.task else None),
        ("prompt", annotation.prompt),
        ("changed_at", annotation.changed_at.isoformat() if annotation.changed_at else None),
    ):
        if value is not None:
            attrs[key] = value
    original = annotation.original
    if original is not None:
        if original.label is not None:
            attrs["original_label"] = original.label
        if original.score is not None:
            attrs["original_score"] = original.score
        if original.box is not None:
            attrs.update(zip(_ORIGINAL_BOX, original.box.xywh, strict=True))
    return attrs


# --------------------------------------------------------------------------------------------------------
# Writing


def categories_from_labels(labels: Iterable[str]) -> list[Category]:
    """Categories for the distinct labels, in first-seen order, with ids from 1.

    For a dataset: ``categories_from_labels(a.label for image in dataset.images for a in image.annotations)``.
    """
    names = dict.fromkeys(labels)  # dicts keep insertion order, so this deduplicates in first-seen order
    return [Category(id=i, name=label) for i, label in enumerate(names, start=1)]


def write_coco(
    dataset: Dataset,
    path: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None = None,
    *,
    supercategory: str = "",
    file_names: Sequence[str] | None = None,
) -> None:
    """Write ``dataset`` as a COCO detection file, replacing ``path`` atomically.

    ``file_name`` is written relative to ``images_dir`` (default: the output file's folder) for images inside
    it, and as an absolute path otherwise; ``file_names`` (one per image, in order) gives them instead, for images
    that are not files here (a Label Studio task's image URL). Image ids are the records' ``id`` where set (a
    project's own, stable between exports), else count from 1 in dataset order; annotation ids count from 1;
    category ids are those of ``dataset.categories``.

    Raises:
        CocoError: an annotation's label has no category, two images would share an id, or the file cannot be
            written.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise CocoError(f"cannot write {str(path)!r}: the folder {str(path.parent)!r} does not exist; create it first")
    root = Path(os.path.abspath(images_dir if images_dir is not None else path.parent))
    if file_names is not None and len(file_names) != len(dataset.images):
        raise ValueError(f"{len(file_names)} file names for {len(dataset.images)} images")
    names = list(file_names) if file_names is not None else [_file_name(r.path, root) for r in dataset.images]
    payload = _payload(dataset, names, supercategory)
    _write_atomic(path, payload)


def _payload(dataset: Dataset, file_names: Sequence[str], supercategory: str) -> dict[str, Any]:
    id_of = {category.name: category.id for category in dataset.categories}
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for position, (record, file_name) in enumerate(zip(dataset.images, file_names, strict=True), start=1):
        image_id = record.id if record.id is not None else position
        images.append({"id": image_id, "file_name": file_name, "width": record.width, "height": record.height})
        for annotation in record.annotations:
            if annotation.label not in id_of:
                raise CocoError(
                    f"label {annotation.label!r} (image {str(record.path)!r}) has no category in Dataset.categories; "
                    "add one, e.g. with model.coco.categories_from_labels"
                )
            box = annotation.box
            entry: dict[str, Any] = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": id_of[annotation.label],
                "bbox": [box.x0, box.y0, box.width, box.height],
                "area": box.area,
                "iscrowd": 0,
                "segmentation": [],
            }
            if annotation.phrase is not None:
                entry["phrase"] = annotation.phrase
            if annotation.score is not None:
                entry["score"] = annotation.score
            attributes = _write_attributes(annotation)
            if attributes:
                # An extension key pycocotools passes through untouched (CVAT exports use the same name).
                entry["attributes"] = attributes
            numbers = [*entry["bbox"], entry["area"], entry.get("score", 0.0)]
            if not all(math.isfinite(v) for v in numbers):
                # json.dump would write Infinity/NaN, which is not JSON: pycocotools and other readers refuse it.
                raise CocoError(
                    f"the {annotation.label!r} box {box.xyxy} (image {str(record.path)!r}) has a width, height, "
                    f"area or score ({entry['area']}, {annotation.score}) that is not a finite number; "
                    "fix or remove it before exporting"
                )
            annotations.append(entry)
    ids = [image["id"] for image in images]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise CocoError(f"image ids {repeated} are used twice; give every ImageRecord its own id, or none")
    categories = [{"id": c.id, "name": c.name, "supercategory": supercategory} for c in dataset.categories]
    return {"images": images, "annotations": annotations, "categories": categories}


def _file_name(image_path: Path, root: Path) -> str:
    # abspath, not resolve: normalises ".." without following symlinks, so the name stays the one the user gave.
    absolute = Path(os.path.abspath(image_path))
    try:
        return absolute.relative_to(root).as_posix()
    except ValueError:
        return str(absolute)


def _write_atomic(path: Path, payload: dict[str, Any]) -> None:
    try:
        # ensure_ascii (the default) keeps the file pure ASCII: pycocotools opens it with the locale's encoding.
        # allow_nan=False: a non-finite number _payload did not catch fails here, before the file is replaced.
        write_atomic(path, lambda fp: dump_json(payload, fp))
    except OSError as exc:
        raise CocoError(f"cannot write {str(path)!r} ({exc.strerror or exc}); check the folder's permissions") from exc
    except ValueError as exc:
        raise CocoError(f"cannot write {str(path)!r}: {exc}; fix or remove that value before exporting") from exc


# --------------------------------------------------------------------------------------------------------
# Validation with the reference implementation


def load_with_pycocotools(path: str | os.PathLike[str]) -> COCO:
    """Load ``path`` with pycocotools, without its progress prints; proves a file is COCO that others can read."""
    from pycocotools.coco import COCO  # imported here: only tests and evaluation need it

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(os.fspath(path))


def split_dataset(dataset: Dataset, *, holdout: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """(train, held-out) by image, the held-out share drawn at random but reproducibly for a seed.

    Both keep every category, so their category ids agree with the original file.
    """
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must be between 0 and 1 (exclusive), got {holdout}")
    count = len(dataset.images)
    n_held = round(count * holdout)
    if count < 2 or not 0 < n_held < count:
        raise ValueError(f"cannot hold out {holdout:.0%} of {count} image(s): both parts need at least one image")
    held = set(random.Random(seed).sample(range(count), n_held))
    train = [image for i, image in enumerate(dataset.images) if i not in held]
    held_out = [image for i, image in enumerate(dataset.images) if i in held]
    return (
        Dataset(categories=dataset.categories, images=train),
        Dataset(categories=dataset.categories, images=held_out),
    )
