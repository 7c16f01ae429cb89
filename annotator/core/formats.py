"""Exports beyond COCO: an Ultralytics YOLO detection dataset, and Pascal VOC XML. Qt-free.

Both write exactly what the COCO export writes (:func:`annotator.core.exchange.export_records`: the same images,
the same boxes clipped to the same re-read sizes, the same category order, the same skips and report); only the
way a box is written differs, in one function per format (:func:`yolo_line`, :func:`voc_corners`). Boxes are in
pixels of the upright image (EXIF orientation applied), which is the frame both formats' readers use.

* **YOLO**, as Ultralytics' dataset documentation describes it (https://docs.ultralytics.com/datasets/detect/):
  ``images/`` and ``labels/`` side by side (a label file is found by replacing ``images`` with ``labels`` in the
  image's path and the extension with ``.txt``), one row ``class x_center y_center width height`` per box,
  normalised to 0..1 by the image's width and height, classes counted from 0; ``data.yaml`` names the root
  (``path``), the ``train`` and ``val`` image folders and the class ``names``. The images are hard-linked into
  ``images/`` (copied where the disk cannot link), so the dataset stands alone. A reviewed image without boxes gets
  an empty label file: a background image.
* **Pascal VOC**: one ``Annotations/<image path>.xml`` per image, with the upright ``size`` and one ``object`` per
  box; ``bndbox`` holds 1-based inclusive pixel indices, the devkit's convention, which readers such as
  detectron2's ``load_voc_instances`` turn back into pixel edges by subtracting 1 from ``xmin`` and ``ymin``. So a
  corner moves by at most half a pixel. ``labels.txt`` lists the classes in order.

Each export is written into a new folder beside the target, read back with the reader below
(:func:`read_yolo`, :func:`read_voc`) and compared with what was exported, and only then moved into place. A target
that exists must be an earlier export of the same format (it holds the marker file), so no other folder is replaced.
"""

from __future__ import annotations

import math
import os
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

import yaml
from PIL import Image

from model.annotations import Box, Category, ImageRecord

from .exchange import ExchangeError, ExportReport, export_records
from .folder import probe_image
from .store import ProjectStore

__all__ = [
    "FORMATS",
    "export_voc",
    "export_yolo",
    "parse_yolo_line",
    "read_voc",
    "read_yolo",
    "voc_corners",
    "yolo_line",
]

MARKER = ".minigpt-annotate-export"  # names the format; only a folder holding it is replaced by a new export
TOLERANCE = 1e-3  # pixels: YOLO's six decimals, relative to sizes of up to tens of thousands of pixels

Labelled = list[tuple[str, Box]]  # an image's boxes as a reader reads them back


def yolo_line(class_id: int, box: Box, width: int, height: int) -> str:
    """One YOLO label row: class (from 0) and the box's centre and size, normalised by the image size."""
    cx, cy = (box.x0 + box.x1) / 2 / width, (box.y0 + box.y1) / 2 / height
    return f"{class_id} {cx:.6f} {cy:.6f} {box.width / width:.6f} {box.height / height:.6f}"


def voc_corners(box: Box) -> tuple[int, int, int, int]:
    """A box's 1-based inclusive pixel indices (xmin, ymin, xmax, ymax): the pixels its edges enclose, rounded."""

    def nearest(value: float) -> int:
        return math.floor(value + 0.5)  # round half up, so that a 1 px box never gets xmax < xmin

    return nearest(box.x0) + 1, nearest(box.y0) + 1, nearest(box.x1), nearest(box.y1)


# --------------------------------------------------------------------------------------------------------
# Writing


def export_yolo(
    store: ProjectStore, folder: str | os.PathLike[str], out: str | os.PathLike[str], *, reviewed_only: bool = False
) -> ExportReport:
    """Write the project as an Ultralytics YOLO detection dataset in the folder ``out`` (see the module docstring).

    Raises:
        ExchangeError: ``out`` is not an earlier YOLO export or cannot be written, or what was written does not
            read back as what was exported (then ``out`` is left as it was).
    """
    return _export("yolo", store, Path(folder), Path(out), reviewed_only, _write_yolo, _check_yolo)


def export_voc(
    store: ProjectStore, folder: str | os.PathLike[str], out: str | os.PathLike[str], *, reviewed_only: bool = False
) -> ExportReport:
    """Write the project as Pascal VOC XML files in the folder ``out`` (see the module docstring).

    Raises:
        ExchangeError: as :func:`export_yolo`.
    """
    return _export("voc", store, Path(folder), Path(out), reviewed_only, _write_voc, _check_voc)


Writer = Callable[[Path, Path, Path, list[Category], list[ImageRecord]], None]  # (into, final place, images root...)
Checker = Callable[[Path, Path, list[ImageRecord]], list[str]]  # (written folder, images root, records): problems


def _export(
    kind: str, store: ProjectStore, root: Path, target: Path, reviewed_only: bool, write: Writer, check: Checker
) -> ExportReport:
    _check_target(kind, target)
    categories, records, report = export_records(store, root, target, reviewed_only=reviewed_only)
    records = _unique_stems(records, root, report)
    report.images = len(records)
    report.annotations = sum(len(record.annotations) for record in records)
    temp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.export")
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex}.old")
    try:
        try:
            temp.mkdir()
            write(temp, target, root, categories, records)
            (temp / MARKER).write_text(kind + "\n", encoding="utf-8")
        except OSError as err:
            raise ExchangeError(f"cannot export to {target}: {err}; check the disk has space and is writable") from err
        problems = check(temp, root, records)
        if problems:
            raise ExchangeError(
                f"the export to {target} failed validation, so {target} was left as it was: {'; '.join(problems[:5])}"
            )
        _swap(temp, target, old)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return report


def _swap(new: Path, target: Path, old: Path) -> None:
    """Move ``new`` to ``target``; an earlier export there goes to ``old`` first, and comes back if the move fails."""
    try:
        if target.exists():
            target.rename(old)
        try:
            new.rename(target)
        except OSError:
            if old.exists():
                old.rename(target)
            raise
    except OSError as err:
        raise ExchangeError(f"cannot put the export in place at {target}: {err}; {target} was left as it was") from err


def _check_target(kind: str, target: Path) -> None:
    if not target.parent.is_dir():
        raise ExchangeError(f"cannot export to {target}: the folder {target.parent} does not exist; create it first")
    if target.exists() and not target.is_dir():
        raise ExchangeError(f"{target} is a file; a {kind.upper()} export is a folder: choose a new folder name")
    if target.is_dir() and any(target.iterdir()):
        marker = target / MARKER
        made = marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
        if made != kind:
            raise ExchangeError(
                f"refusing to export into {target}: it is not empty and not an earlier {kind.upper()} export of "
                "minigpt-annotate; choose an empty or new folder"
            )


def _relative(record: ImageRecord, root: Path) -> PurePosixPath:
    return PurePosixPath(Path(record.path).relative_to(root).as_posix())


def _unique_stems(records: list[ImageRecord], root: Path, report: ExportReport) -> list[ImageRecord]:
    """Both formats name an image's label file after the image without its extension: of ``a.jpg`` and ``a.png``
    in one folder only the first can be exported; the other is reported."""
    seen: dict[PurePosixPath, PurePosixPath] = {}
    kept = []
    for record in records:
        path = _relative(record, root)
        stem = path.with_suffix("")
        if stem in seen:
            report.skipped.append(
                (str(path), f"{seen[stem]} has the same name without its extension; rename one to export both")
            )
            continue
        seen[stem] = path
        kept.append(record)
    return kept


def _write_yolo(out: Path, target: Path, root: Path, categories: list[Category], records: list[ImageRecord]) -> None:
    class_ids = {category.name: category.id - 1 for category in categories}  # YOLO counts classes from 0
    for record in records:
        relative = _relative(record, root)
        image = out / "images" / relative
        image.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(record.path, image)
        except OSError:  # another disk, or a file system without hard links
            shutil.copy2(record.path, image)
        labels = out / "labels" / relative.with_suffix(".txt")
        labels.parent.mkdir(parents=True, exist_ok=True)
        lines = [yolo_line(class_ids[a.label], a.box, record.width, record.height) for a in record.annotations]
        labels.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    data = {
        "path": str(target.resolve()),  # absolute: Ultralytics reads a relative path as under its own datasets folder
        "train": "images",
        "val": "images",
        "names": {category.id - 1: category.name for category in categories},
    }
    (out / "data.yaml").write_text(
        "# An Ultralytics YOLO detection dataset written by minigpt-annotate\n"
        + yaml.safe_dump(data, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )


def _write_voc(out: Path, target: Path, root: Path, categories: list[Category], records: list[ImageRecord]) -> None:
    for record in records:
        relative = _relative(record, root)
        annotation = ET.Element("annotation")
        ET.SubElement(annotation, "folder").text = root.name
        ET.SubElement(annotation, "filename").text = str(relative)
        ET.SubElement(annotation, "path").text = str(Path(record.path).resolve())
        ET.SubElement(ET.SubElement(annotation, "source"), "database").text = "minigpt-annotate"
        size = ET.SubElement(annotation, "size")
        ET.SubElement(size, "width").text = str(record.width)
        ET.SubElement(size, "height").text = str(record.height)
        ET.SubElement(size, "depth").text = str(_depth(Path(record.path)))
        ET.SubElement(annotation, "segmented").text = "0"
        for item in record.annotations:
            obj = ET.SubElement(annotation, "object")
            ET.SubElement(obj, "name").text = item.label
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = "0"
            ET.SubElement(obj, "difficult").text = "0"
            bndbox = ET.SubElement(obj, "bndbox")
            for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), voc_corners(item.box), strict=True):
                ET.SubElement(bndbox, tag).text = str(value)
        ET.indent(annotation)
        target = out / "Annotations" / relative.with_suffix(".xml")
        target.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(annotation).write(target, encoding="utf-8", xml_declaration=True)
    (out / "labels.txt").write_text("".join(c.name + "\n" for c in categories), encoding="utf-8")


def _depth(path: Path) -> int:
    """Colour channels, from the header (VOC's ``depth``); 3 when the header does not say."""
    try:
        with Image.open(path) as image:
            return len(image.getbands())
    except Exception:  # the size was read a moment ago; a file changing under us is not worth failing the export
        return 3


# --------------------------------------------------------------------------------------------------------
# Reading back


def read_yolo(dataset: str | os.PathLike[str], *, moved: bool = False) -> dict[str, Labelled]:
    """Read an Ultralytics YOLO detection dataset as Ultralytics' documentation describes it: ``data.yaml``'s
    ``names`` and ``train`` image folder (under ``path``, or under the folder ``data.yaml`` is in when ``path`` is
    not a folder), each image's label file found by replacing the last ``images`` folder of its path with
    ``labels`` and its extension with ``.txt`` (a missing file: no objects), rows of ``class cx cy w h``
    normalised by the image's upright size. Returns each image's (label, box in pixels), keyed by its path under
    the image folder. ``moved``: the dataset lies at ``dataset`` whatever ``path`` says (an export reads itself
    back before it is moved to the place ``path`` names).

    Raises:
        ExchangeError: a file breaks the format; the message names the file and the row.
    """
    root = Path(dataset)
    data = yaml.safe_load((root / "data.yaml").read_text(encoding="utf-8"))
    names = data["names"]
    names = dict(enumerate(names)) if isinstance(names, list) else {int(k): str(v) for k, v in names.items()}
    base = root if moved or not data.get("path") else Path(data["path"])
    if not base.is_dir():
        base = root
    images = base / data["train"]
    found: dict[str, Labelled] = {}
    for image in sorted(p for p in images.rglob("*") if p.is_file()):
        size = probe_image(image)
        if isinstance(size, str):
            raise ExchangeError(f"{image}: {size}")
        width, height = size
        parts = image.parts
        last = len(parts) - 1 - parts[::-1].index("images")
        labels = Path(*parts[:last], "labels", *parts[last + 1 :]).with_suffix(".txt")
        lines = labels.read_text(encoding="utf-8").splitlines() if labels.is_file() else []
        boxes: Labelled = []
        for number, line in enumerate(lines, start=1):
            if line.strip():
                try:
                    boxes.append(parse_yolo_line(line, names, width, height))
                except ExchangeError as err:
                    raise ExchangeError(f"{labels}:{number}: {err}") from err
        found[image.relative_to(images).as_posix()] = boxes
    return found


def parse_yolo_line(line: str, names: dict[int, str], width: int, height: int) -> tuple[str, Box]:
    """One row of a YOLO label file (``class cx cy w h``, normalised) as (label, box in pixels of a ``width`` x
    ``height`` image).

    Raises:
        ExchangeError: the row is not five numbers, names an unknown class, or has a value outside 0..1.
    """
    fields = line.split()
    try:
        if len(fields) != 5:
            raise ValueError(f"{len(fields)} fields")
        class_id, cx, cy, w, h = int(fields[0]), *(float(v) for v in fields[1:])
    except ValueError as err:
        raise ExchangeError(f"not 'class x_center y_center width height' ({err}): {line!r}") from err
    if class_id not in names:
        raise ExchangeError(f"class {class_id} is not in data.yaml's names: {line!r}")
    if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)) or w == 0 or h == 0:
        raise ExchangeError(f"a value outside 0..1, or an empty box: {line!r}")
    x0, y0 = (cx - w / 2) * width, (cy - h / 2) * height
    return names[class_id], Box(x0=x0, y0=y0, x1=x0 + w * width, y1=y0 + h * height)


def read_voc(dataset: str | os.PathLike[str]) -> dict[str, Labelled]:
    """Read the ``Annotations/*.xml`` of a Pascal VOC export with :mod:`xml.etree`, corners back to pixel edges as
    detectron2 does (``xmin - 1``, ``ymin - 1``), keyed by each file's ``filename``.

    Raises:
        ExchangeError: a file is not VOC XML; the message names it.
    """
    found: dict[str, Labelled] = {}
    for path in sorted((Path(dataset) / "Annotations").rglob("*.xml")):
        try:
            root = ET.parse(path).getroot()
            boxes: Labelled = []
            for obj in root.iter("object"):
                bndbox = obj.find("bndbox")
                assert bndbox is not None, "an object without a bndbox"
                xmin, ymin, xmax, ymax = (float(bndbox.findtext(tag) or "") for tag in ("xmin", "ymin", "xmax", "ymax"))
                boxes.append((obj.findtext("name") or "", Box(x0=xmin - 1, y0=ymin - 1, x1=xmax, y1=ymax)))
            found[root.findtext("filename") or ""] = boxes
        except (ET.ParseError, AssertionError, ValueError) as err:
            raise ExchangeError(f"{path} is not Pascal VOC XML: {err}") from err
    return found


def _check_yolo(out: Path, root: Path, records: list[ImageRecord]) -> list[str]:
    return _compare(lambda: read_yolo(out, moved=True), root, records, TOLERANCE)


def _check_voc(out: Path, root: Path, records: list[ImageRecord]) -> list[str]:
    return _compare(lambda: read_voc(out), root, records, 0.5 + 1e-9)  # corners rounded to whole pixels


def _compare(
    read: Callable[[], dict[str, Labelled]], root: Path, records: Sequence[ImageRecord], tolerance: float
) -> list[str]:
    """What differs between the boxes read back and those exported, image by image (boxes in a fixed order)."""
    try:
        found = read()
    except (ExchangeError, OSError, KeyError, TypeError, yaml.YAMLError) as err:
        return [f"it cannot be read back ({type(err).__name__}: {err})"]
    problems = []
    if len(found) != len(records):
        problems.append(f"it holds {len(found)} images, {len(records)} were exported")
    for record in records:
        key = str(_relative(record, root))
        if key not in found:
            problems.append(f"{key} is missing")
            continue
        left = list(found[key])
        if len(left) != len(record.annotations):
            problems.append(f"{key}: {len(left)} boxes read back, {len(record.annotations)} exported")
            continue
        for annotation in record.annotations:  # each exported box must come back once, of its label, in place
            match = next((pair for pair in left if _same(pair, annotation.label, annotation.box, tolerance)), None)
            if match is None:
                problems.append(f"{key}: {annotation.label} at {annotation.box.xyxy} did not read back")
            else:
                left.remove(match)
    return problems


def _same(pair: tuple[str, Box], label: str, box: Box, tolerance: float) -> bool:
    return pair[0] == label and max(abs(a - b) for a, b in zip(pair[1].xyxy, box.xyxy, strict=True)) <= tolerance


FORMATS: dict[str, Callable[..., ExportReport]] = {"yolo": export_yolo, "voc": export_voc}
