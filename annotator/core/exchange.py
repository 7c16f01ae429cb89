"""COCO in and out of a project: export what people annotated, import someone else's work to continue it.

Export follows the checklist of what COCO exporters get wrong:

* only annotations leave the project, never proposals;
* ``width``/``height`` are re-read from each file (upright, EXIF applied), not taken from the store's cache, and an
  image that cannot be read is skipped and reported rather than exported with a guessed size;
* boxes are clipped to the image, and those under 1 px after clipping are skipped and reported;
* every box says where it came from (origin, model version, task, prompt, time of the last change, and for an edited
  box the proposal it was made from) in its ``attributes`` (:mod:`model.coco`); an edited box's ``score`` is not
  written as its own, and import reads all of it back;
* category ids are the label order of the store (id = position + 1, every label, used or not) and image ids are the
  store's own, so neither shifts between exports; annotation ids count from 1 (COCOeval treats id 0 as
  "unmatched");
* the file is written beside the target, read back with pycocotools and checked, and only then moved into place,
  so a failed export never replaces a good file.

Import matches images by folder-relative path (then by a unique file name), adds boxes as annotations in one
transaction, and skips boxes the project already has, so importing the same file twice adds nothing. It comes in
three parts so that a window stays responsive: :func:`read_import` (the files) and :func:`match_import` (the
duplicates, in time proportional to the boxes) run in any thread; :func:`apply_import` writes, in one transaction,
on the thread that owns the store.
"""

from __future__ import annotations

import contextlib
import copy
import os
import posixpath
import shutil
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from model.annotations import Annotation, Box, Category, Dataset, ImageRecord, Origin
from model.coco import CocoError, load_with_pycocotools, read_coco_with_report, write_coco
from model.errors import MiniGPTError

from .folder import is_image_name, natural_key, probe_image
from .overlaps import OverlapIndex
from .records import BoxRow, BoxState, ImageRow, now
from .store import ProjectStore

__all__ = [
    "IMPORT_DUPLICATE_IOU",
    "MIN_BOX_SIZE",
    "ExchangeError",
    "ExportReport",
    "ImageImport",
    "ImportCancelled",
    "ImportPlan",
    "ImportReport",
    "apply_import",
    "export_coco",
    "export_records",
    "import_coco",
    "match_import",
    "read_import",
]

MIN_BOX_SIZE = 1.0  # pixels; a box thinner than this after clipping is a slip of the mouse, not an object
IMPORT_DUPLICATE_IOU = 0.9  # an imported box overlapping an annotation of its label this much is that annotation


class ExchangeError(MiniGPTError):
    """An export or import cannot be done; the message names the cause and the fix."""


@dataclass
class ExportReport:
    """What an export wrote, and what it left out and why."""

    path: Path
    images: int
    annotations: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image path, reason): images or single boxes
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (image path, message): exported, but check
    unlabelled: int = 0  # images with no boxes, not marked reviewed: not negatives yet, so left out

    def __str__(self) -> str:
        return _summary(
            f"{self.annotations} boxes on {self.images} images to {self.path}",
            (self.unlabelled, "images with no boxes and not reviewed left out"),
            (len(self.skipped), "skipped"),
            (len(self.warnings), "to check"),
        )


@dataclass
class ImportReport:
    """What an import added, and what it could not place."""

    images_matched: int = 0
    annotations_added: int = 0
    duplicates_skipped: int = 0
    unmatched: list[str] = field(default_factory=list)  # file names in the COCO file with no image in the folder
    size_mismatches: list[tuple[str, str]] = field(default_factory=list)  # (image path, reason): boxes not imported
    not_boxes: int = 0  # crowd regions and empty boxes in the file, which cannot be boxes here
    image_ids: set[int] = field(default_factory=set)  # the project's images the import added boxes to
    added: list[BoxRow] = field(default_factory=list, repr=False)  # the boxes it added, as stored (for undo)

    def __str__(self) -> str:
        return _summary(
            f"{self.annotations_added} boxes added on {self.images_matched} images, "
            f"{self.duplicates_skipped} already there",
            (len(self.unmatched), "images not in the folder"),
            (len(self.size_mismatches), "images with another size left out"),
            (self.not_boxes, "crowd or empty regions ignored"),
        )


def _summary(head: str, *counts: tuple[int, str]) -> str:
    """``head`` followed by "; N what" for each count that is not zero."""
    return head + "".join(f"; {count} {what}" for count, what in counts if count)


# --------------------------------------------------------------------------------------------------------
# Export


def export_coco(
    store: ProjectStore,
    folder: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    reviewed_only: bool = False,
    include_unannotated: bool = True,
) -> ExportReport:
    """Write the project's annotations to ``out`` as COCO, validated before it replaces anything.

    ``reviewed_only`` exports only images marked reviewed. An image without boxes is a negative for training, so it
    is exported only when someone said so: it is marked reviewed (and ``include_unannotated`` is on). Images nobody
    has worked on yet are left out and counted in ``report.unlabelled``.

    Raises:
        ExchangeError: ``out`` cannot be written, or the written file does not read back as what was exported
            (then ``out`` is left as it was).
    """
    root = Path(folder)
    target = Path(out)
    if target.is_dir():
        raise ExchangeError(f"{target} is a folder; export to a .json file, e.g. {target / 'annotations.json'}")
    if not target.parent.is_dir():
        raise ExchangeError(f"cannot export to {target}: the folder {target.parent} does not exist; create it first")
    if is_image_name(target.name):
        raise ExchangeError(f"refusing to export over {target}: it is named like an image; export to a .json file")

    categories, records, report = export_records(
        store, root, target, reviewed_only=reviewed_only, include_unannotated=include_unannotated
    )
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.export")
    try:
        try:
            write_coco(Dataset(categories=categories, images=records), temp, images_dir=root)
        except CocoError as err:
            raise ExchangeError(f"cannot export to {target}: {err}") from err
        _validate(temp, target, records, len(categories))
        with contextlib.suppress(OSError):
            shutil.copymode(target, temp)  # a replaced export keeps its permissions
        os.replace(temp, target)
    finally:
        with contextlib.suppress(OSError):
            temp.unlink()
    return report


def export_records(
    store: ProjectStore,
    root: Path,
    target: Path,
    *,
    reviewed_only: bool = False,
    include_unannotated: bool = True,
) -> tuple[list[Category], list[ImageRecord], ExportReport]:
    """What every export writes, whatever the format (COCO here, YOLO and Pascal VOC in :mod:`.formats`): the
    categories (id = label position + 1), and the images with their annotations clipped to the size re-read from
    each file; what is left out is in the report (for ``target``), as :func:`export_coco` describes."""
    categories = [Category(id=i, name=label.name) for i, label in enumerate(store.labels(), start=1)]
    known = {category.name for category in categories}
    boxes = store.all_boxes(BoxState.annotation)
    report = ExportReport(path=target, images=0, annotations=0)
    records: list[ImageRecord] = []
    for row in sorted(store.images(), key=lambda r: natural_key(r.path)):
        rows = boxes.get(row.id, [])
        if reviewed_only and not row.reviewed:
            continue
        if not rows and not (include_unannotated and row.reviewed):
            report.unlabelled += not row.reviewed
            continue
        size = probe_image(root / row.path)
        if isinstance(size, str):
            report.skipped.append((row.path, size))
            continue
        width, height = size
        if row.width is not None and (row.width, row.height) != size:
            report.warnings.append(
                (
                    row.path,
                    f"the file is now {width}x{height} but was {row.width}x{row.height} when opened; "
                    "check that its boxes still fit the picture",
                )
            )
        exported = (_exported(box_row, row.path, width, height, known, report) for box_row in rows)
        annotations = [annotation for annotation in exported if annotation is not None]
        records.append(
            ImageRecord(
                path=root / row.path,
                id=row.id,  # the store's id (from 1): an image keeps it whichever others are exported with it
                width=width,
                height=height,
                annotations=annotations,
                reviewed=row.reviewed,
            )
        )
        report.annotations += len(annotations)
    report.images = len(records)
    return categories, records, report


def _exported(
    row: BoxRow, where: str, width: int, height: int, known: set[str], report: ExportReport
) -> Annotation | None:
    """The annotation to export for ``row``, clipped to the image, or None (reported) if it cannot be one."""
    if row.label not in known:
        report.skipped.append((where, f"box {row.id} has no label; give it one to export it"))
        return None
    x0, y0 = max(0.0, row.box.x0), max(0.0, row.box.y0)
    x1, y1 = min(float(width), row.box.x1), min(float(height), row.box.y1)
    if x1 - x0 < MIN_BOX_SIZE or y1 - y0 < MIN_BOX_SIZE:
        report.skipped.append(
            (
                where,
                f"box {row.id} ({row.label}) at {_fmt(row.box.xyxy)} is under {MIN_BOX_SIZE:g} px inside the "
                f"{width}x{height} image",
            )
        )
        return None
    origin = row.origin or (Origin.proposed if row.is_proposal else Origin.manual)
    return Annotation(
        box=Box(x0=x0, y0=y0, x1=x1, y1=y1),
        label=row.label,
        phrase=row.phrase,
        origin=origin,
        # An edited box has no model score of its own: the model scored the proposal, which `original` keeps.
        score=None if origin is Origin.edited else row.score,
        model_version=row.model_version,
        task=row.task,
        prompt=row.prompt,
        changed_at=row.changed_at,
        original=row.original,
    )


def _validate(written: Path, target: Path, records: Sequence[ImageRecord], n_categories: int) -> None:
    """Read the file back the way consumers will (pycocotools) and check it holds exactly what was exported."""
    try:
        coco = load_with_pycocotools(written)
        problems = _problems(coco.dataset, records, n_categories)
    except Exception as err:  # pycocotools raises plain assertion/key errors for malformed files
        problems = [f"pycocotools cannot read it ({type(err).__name__}: {err})"]
    if problems:
        raise ExchangeError(
            f"the export to {target} failed validation, so {target} was left as it was: {'; '.join(problems[:5])}"
        )


def _problems(data: dict[str, Any], records: Sequence[ImageRecord], n_categories: int) -> list[str]:
    problems: list[str] = []
    images, annotations, categories = data["images"], data["annotations"], data["categories"]
    expected = sum(len(record.annotations) for record in records)
    if len(images) != len(records):
        problems.append(f"it holds {len(images)} images, {len(records)} were exported")
    if len(annotations) != expected:
        problems.append(f"it holds {len(annotations)} annotations, {expected} were exported")
    if len(categories) != n_categories:
        problems.append(f"it holds {len(categories)} categories, {n_categories} were exported")
    sizes = {image["id"]: (image["width"], image["height"]) for image in images}
    category_ids = {category["id"] for category in categories}
    for section, entries in (("image", images), ("annotation", annotations), ("category", categories)):
        ids = [entry["id"] for entry in entries]
        if len(set(ids)) != len(ids) or any(not isinstance(i, int) or i < 1 for i in ids):
            problems.append(f"its {section} ids are not unique integers from 1")
    for ann in annotations:
        x, y, w, h = ann["bbox"]
        width, height = sizes.get(ann["image_id"], (0, 0))
        if ann["category_id"] not in category_ids or ann["image_id"] not in sizes:
            problems.append(f"annotation {ann['id']} refers to a missing image or category")
        elif not (w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= width + 1e-6 and y + h <= height + 1e-6):
            problems.append(f"annotation {ann['id']} has bbox {ann['bbox']} outside its {width}x{height} image")
        elif ann.get("area", 0) <= 0 or ann.get("iscrowd") != 0:
            problems.append(f"annotation {ann['id']} lacks a positive area or iscrowd 0")
    return problems


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


# --------------------------------------------------------------------------------------------------------
# Import


class ImportCancelled(MiniGPTError):
    """``should_stop()`` turned true while the file was being read or matched: nothing was changed."""


@dataclass(frozen=True)
class ImageImport:
    """One image of the file, matched to the project: what to write for it."""

    path: str  # folder-relative
    image_id: int | None  # None: a file in the folder the project has not listed yet; the import adds it
    size: tuple[int, int] | None  # its upright size as read now (None: unreadable, so nothing to check against)
    annotations: tuple[Annotation, ...]  # the file's boxes for it
    new: tuple[Annotation, ...] | None = None  # those not yet in the project, once matched (match_import)
    duplicates: int = 0  # and how many were


@dataclass(frozen=True)
class ImportPlan:
    """What reading a COCO file found, before anything is written: :func:`apply_import` writes it."""

    labels: tuple[str, ...]  # in category id order
    images: tuple[ImageImport, ...]
    report: ImportReport  # what reading found (unmatched images, other sizes, crowd regions); the writing adds to it
    matched_at: tuple[int, int] | None = None  # the store's generation the duplicates were found against

    @property
    def image_ids(self) -> list[int]:
        """The project's images the file has boxes for (not those the import will add to the project)."""
        return sorted({image.image_id for image in self.images if image.image_id is not None})


Corners = tuple[str, float, float, float, float]  # (label, x0, y0, x1, y1): an annotation as a worker gets it


def import_coco(store: ProjectStore, folder: str | os.PathLike[str], coco_path: str | os.PathLike[str]) -> ImportReport:
    """Add the boxes of a COCO file to the project of ``folder`` as annotations, in one transaction.

    Images are matched by folder-relative path, else by a file name that is unique in the project. Boxes that
    repeat an annotation of the same label (IoU >= 0.9) are skipped, one for one, so importing twice adds nothing.
    Labels are created in category id order, so a fresh project re-exports the file's ids. An image whose size in
    the file differs from the real (upright) size keeps its boxes out: they were drawn on another frame, e.g. the
    un-rotated pixels of an EXIF-rotated photo.

    This is :func:`read_import`, :func:`match_import` and :func:`apply_import` in a row; the desktop runs the first
    two in a worker thread, and only the last (the writing) on the thread that owns the store.

    Raises:
        CocoError: the file is missing or malformed.
    """
    plan = read_import(store.images(), folder, coco_path)
    plan = match_import(plan, store.annotation_corners(plan.image_ids), store.generation)
    return apply_import(store, plan)


def read_import(
    images: Sequence[ImageRow],
    folder: str | os.PathLike[str],
    coco_path: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImportPlan:
    """The slow part of an import, reading files only: read and check the COCO file, match its images to the
    project's ``images``, and read each matched image's real size. Touches no store, so it can run in any thread.

    ``progress(done, total)`` is called after each image of the file; ``should_stop`` is checked between images.

    Raises:
        CocoError: the file is missing or malformed.
        ImportCancelled: ``should_stop()`` turned true.
    """
    root = Path(folder).resolve()
    read = read_coco_with_report(coco_path, images_dir=root)
    report = ImportReport(not_boxes=len(read.skipped))
    by_path = {row.path: row.id for row in images}
    by_name: dict[str, list[int]] = defaultdict(list)
    for row in images:
        by_name[posixpath.basename(row.path)].append(row.id)
    path_of = {row.id: row.path for row in images}
    planned: list[ImageImport] = []
    total = len(read.dataset.images)
    for done, record in enumerate(read.dataset.images, start=1):
        _check_stop(should_stop, coco_path)
        relative = _relative(record.path, root)
        matched = _match(root, relative, by_path, by_name)
        if matched is None:
            report.unmatched.append(relative)
        else:
            report.images_matched += 1
            path = relative if matched == _NEW else path_of[matched]
            size = probe_image(root / path)
            if isinstance(size, tuple) and size != (record.width, record.height):
                report.size_mismatches.append(
                    (
                        path,
                        f"the file says {record.width}x{record.height}, the image is {size[0]}x{size[1]} "
                        "upright; its boxes were not imported",
                    )
                )
            else:  # an unreadable image keeps the file's boxes: nothing to check them against
                image_id = None if matched == _NEW else matched
                known = size if isinstance(size, tuple) else None
                planned.append(ImageImport(path, image_id, known, tuple(record.annotations)))
        if progress is not None:
            progress(done, total)
    labels = tuple(category.name for category in sorted(read.dataset.categories, key=lambda c: c.id))
    return ImportPlan(labels=labels, images=tuple(planned), report=report)


def match_import(
    plan: ImportPlan,
    existing: Mapping[int, Sequence[Corners]],
    generation: tuple[int, int],
    *,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImportPlan:
    """Find which of the file's boxes the project already has, against ``existing`` (the annotations of
    ``plan.image_ids``, :meth:`ProjectStore.annotation_corners`) as the store held them at ``generation``.
    Pure: runs in any thread. ``progress`` and ``should_stop`` as for :func:`read_import`.

    Raises:
        ImportCancelled: ``should_stop()`` turned true.
    """
    # Two records of the file can name the same image: the second must see what the first adds.
    seen: dict[int | str, list[tuple[str, Box]]] = {}
    matched: list[ImageImport] = []
    for done, image in enumerate(plan.images, start=1):
        _check_stop(should_stop, "the COCO file")
        key: int | str = image.path if image.image_id is None else image.image_id
        if key not in seen:
            corners = existing.get(image.image_id, []) if image.image_id is not None else []
            seen[key] = [(label, Box(x0=x0, y0=y0, x1=x1, y1=y1)) for label, x0, y0, x1, y1 in corners]
        new, duplicates = _new_annotations(seen[key], image.annotations)
        seen[key] += [(annotation.label.strip(), annotation.box) for annotation in new]
        matched.append(replace(image, new=tuple(new), duplicates=duplicates))
        if progress is not None:
            progress(done, len(plan.images))
    return replace(plan, images=tuple(matched), matched_at=generation)


def apply_import(store: ProjectStore, plan: ImportPlan) -> ImportReport:
    """The writing part of an import, in one transaction: labels, new images, sizes, and the boxes that are not
    already there. When the store changed since :func:`match_import` found them (the person went on working), or
    they were never matched, the duplicates are found again here, against the store as it is now.

    Raises:
        StoreError: the store cannot be written; then nothing was.
    """
    report = copy.deepcopy(plan.report)  # the plan stays as read
    matched = plan.matched_at is not None and plan.matched_at == store.generation
    with store.batch():
        for name in plan.labels:
            store.ensure_label(name)
        for image in plan.images:
            image_id = image.image_id
            if image_id is None:
                store.add_images([image.path])
                image_id = store.image_id(image.path)
                assert image_id is not None  # just added, in this transaction
            if image.size is not None:
                store.set_image_size(image_id, *image.size)
            if matched and image.new is not None:
                new, duplicates = list(image.new), image.duplicates
            else:
                current = [(row.label, row.box) for row in store.boxes(image_id) if row.state is BoxState.annotation]
                new, duplicates = _new_annotations(current, image.annotations)
            report.added += store.put_boxes([_annotation_row(annotation, image_id) for annotation in new])
            report.annotations_added += len(new)
            report.duplicates_skipped += duplicates
            if new:
                report.image_ids.add(image_id)
    return report


_NEW = -1  # _match's answer for an image file that is in the folder but not yet in the project


def _check_stop(should_stop: Callable[[], bool] | None, what: str | os.PathLike[str]) -> None:
    if should_stop is not None and should_stop():
        raise ImportCancelled(f"the import of {os.fspath(what)} was cancelled; nothing was changed")


def _relative(path: Path, root: Path) -> str:
    """The folder-relative POSIX path of a COCO image (``..`` where it lies outside the folder)."""
    return Path(os.path.relpath(os.path.abspath(path), root)).as_posix()


def _match(root: Path, relative: str, by_path: dict[str, int], by_name: dict[str, list[int]]) -> int | None:
    """The project's image id for a file of the COCO file, ``_NEW`` for an image file the folder gained since it
    was scanned (the import adds it), or None."""
    if relative in by_path:
        return by_path[relative]
    inside = not relative.startswith("../") and relative != ".."
    parts = relative.split("/")
    if inside and is_image_name(relative) and not any(p.startswith(".") for p in parts) and (root / relative).is_file():
        by_path[relative] = _NEW  # a second record naming it is the same new image
        return _NEW
    candidates = by_name.get(posixpath.basename(relative), [])
    return candidates[0] if len(candidates) == 1 else None


def _new_annotations(
    existing: Sequence[tuple[str, Box]], annotations: Sequence[Annotation]
) -> tuple[list[Annotation], int]:
    """The file's boxes not yet among the ``existing`` annotations (label, box), and how many were. Each existing
    annotation absorbs at most one box: the one it overlaps most (ties: the later annotation), in file order."""
    if not existing:  # a first import: nothing to look up
        return list(annotations), 0
    index = OverlapIndex(IMPORT_DUPLICATE_IOU)
    for i, (label, box) in enumerate(existing):
        index.add(label, box, i)
    new: list[Annotation] = []
    duplicates = 0
    for annotation in annotations:
        if index.take_best(annotation.label.strip(), annotation.box) is None:  # the store keeps labels stripped
            new.append(annotation)
        else:
            duplicates += 1
    return new, duplicates


def _annotation_row(annotation: Annotation, image_id: int) -> BoxRow:
    return BoxRow(
        image_id=image_id,
        label=annotation.label.strip(),
        box=annotation.box,
        state=BoxState.annotation,
        origin=annotation.origin,  # what the file says: a box without provenance is a person's (manual)
        score=annotation.score,
        phrase=annotation.phrase,
        model_version=annotation.model_version,
        task=annotation.task,
        prompt=annotation.prompt,
        changed_at=annotation.changed_at or now(),
        original=annotation.original,
    )
