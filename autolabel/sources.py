"""What `autolabel` labels: images (and optional per-image labels or phrases) from a folder, a COCO file, a Label
Studio JSON export or a JSONL manifest, validated before anything is written.

Every source gives :class:`Item` s in a stable order, each with a key unique in the source (the journal's key, so
a rerun finds what is done). Bad input raises :class:`SourceError`, one line with the cause and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from model.coco import CocoError, read_coco
from model.errors import MiniGPTError
from model.image_files import scan_folder

__all__ = ["LOCAL_FILES", "Item", "Source", "SourceError", "read_source"]

LOCAL_FILES = "/data/local-files/"  # Label Studio's local-storage URL prefix: /data/local-files/?d=<relative path>


class SourceError(MiniGPTError):
    """The source cannot be read as images to label."""


@dataclass(frozen=True)
class Item:
    """One image to label, and what it asks beyond the run's labels."""

    key: str  # unique in the source; the journal's key
    path: Path  # the image file (for a live project's task: its reference, as a name only)
    labels: tuple[str, ...] | None = None  # this image's labels (a manifest line's "labels"), else the run's
    phrases: tuple[str, ...] | None = None  # referring phrases ([refer]), from a manifest line
    task: dict[str, Any] | None = field(default=None, compare=False)  # a Label Studio export's task, kept as it was
    url: str | None = None  # a live project's task: its image reference, read through label_studio_access.media
    task_id: int | None = None  # a live project's task id

    @property
    def image(self) -> str:
        """What the image is, for messages and the journal: the task's reference, or the file's path."""
        return self.url if self.url is not None else str(self.path)


@dataclass(frozen=True)
class Source:
    kind: str  # folder, coco, label-studio, manifest, label-studio-project (autolabel.project_source)
    location: Path
    items: tuple[Item, ...]
    labels: tuple[str, ...] = ()  # labels the source itself names (a COCO file's categories)
    fingerprint: str = ""  # what identifies the source in the journal: its path and, for a file, its content
    image_key: str = "image"  # Label Studio task data key for the image
    skip: frozenset[str] = frozenset()  # keys not to answer: a project's tasks that hold this model's prediction
    name: str = ""  # how the summary names the source (default: its location)


class _ManifestLine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(min_length=1)
    labels: list[str] | None = None
    phrases: list[str] | None = None

    @field_validator("image")
    @classmethod
    def _a_path(cls, image: str) -> str:
        if "\x00" in image:
            raise ValueError("a path cannot hold a NUL character")
        return image

    @field_validator("labels", "phrases")
    @classmethod
    def _not_blank(cls, values: list[str] | None) -> list[str] | None:
        if values is not None and (not values or any(not v.strip() for v in values)):
            raise ValueError("must be a non-empty list of non-blank texts")
        return values


class _Task(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: int | str | None = None
    data: dict[str, Any]


def read_source(
    source: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None, image_key: str | None = None
) -> Source:
    """The items of ``source``; its kind from what it is (a folder; ``.jsonl``; ``.json``: COCO or a task list).

    ``root``: the folder Label Studio's ``/data/local-files/?d=`` paths are relative to. ``image_key``: the task
    data key holding the image (default: the label config's, else ``image``).
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise SourceError(
            f"the source {path} does not exist; pass a folder of images, a COCO, Label Studio or JSONL file"
        )
    if path.is_dir():
        found = _folder(path)
    elif path.suffix.lower() == ".jsonl":
        found = _manifest(path)
    elif path.suffix.lower() == ".json":
        data = _load_json(path)
        if isinstance(data, dict) and "images" in data:
            found = _coco(path)
        elif isinstance(data, list):
            found = _label_studio(path, data, root, image_key or "image")
        else:
            raise SourceError(
                f"{path} is neither a COCO file (an object with 'images') nor a Label Studio export (a list of "
                "tasks); pass one of those"
            )
    else:
        raise SourceError(
            f"unknown source type {path.name!r}; pass a folder of images, a COCO or Label Studio export (.json) or a "
            "JSONL manifest (.jsonl)"
        )
    if not found.items:
        raise SourceError(f"the source {path} holds no images; add images or pass another source")
    _check_unique(found)
    return found


def _folder(path: Path) -> Source:
    root = path.resolve()
    items = tuple(Item(key=name, path=root / name) for name in scan_folder(root))
    return Source("folder", root, items, fingerprint=f"folder:{root}")


def _coco(path: Path) -> Source:
    try:
        dataset = read_coco(path)
    except CocoError as err:
        raise SourceError(str(err)) from err
    items = tuple(Item(key=str(record.path), path=Path(record.path)) for record in dataset.images)
    labels = tuple(category.name for category in dataset.categories)
    return Source("coco", path.resolve(), items, labels=labels, fingerprint=_file_fingerprint("coco", path))


def _manifest(path: Path) -> Source:
    items = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise SourceError(f"cannot read the manifest {path}: {err}; pass a readable UTF-8 JSONL file") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = _ManifestLine.model_validate_json(line)
        except ValidationError as err:
            problem = err.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "line"
            raise SourceError(
                f"{path} line {number}: {where}: {problem['msg']}; each line must be "
                '{"image": PATH, "labels": [...]} or {"image": PATH, "phrases": [...]}'
            ) from err
        image = Path(entry.image).expanduser()
        items.append(
            Item(
                key=f"line {number}",
                path=image if image.is_absolute() else path.parent.resolve() / image,
                labels=tuple(entry.labels) if entry.labels else None,
                phrases=tuple(entry.phrases) if entry.phrases else None,
            )
        )
    return Source("manifest", path.resolve(), tuple(items), fingerprint=_file_fingerprint("manifest", path))


def _label_studio(path: Path, data: list[Any], root: str | os.PathLike[str] | None, image_key: str) -> Source:
    items = []
    base = Path(root).expanduser().resolve() if root is not None else None
    for index, raw in enumerate(data):
        try:
            task = _Task.model_validate(raw)
        except ValidationError as err:
            raise SourceError(
                f"{path} task {index}: {err.errors()[0]['msg']}; a Label Studio export is a list of "
                '{"id": ..., "data": {...}} tasks'
            ) from err
        reference = task.data.get(image_key)
        if not isinstance(reference, str) or not reference:
            raise SourceError(
                f"{path} task {index}: data has no {image_key!r} image; pass --image-key with the key that holds it"
            )
        key = f"task {task.id}" if task.id is not None else f"task #{index}"
        items.append(Item(key=key, path=_task_image(reference, base, path), task=raw))
    fingerprint = _file_fingerprint("label-studio", path)
    return Source("label-studio", path.resolve(), tuple(items), fingerprint=fingerprint, image_key=image_key)


def _task_image(reference: str, root: Path | None, export: Path) -> Path:
    parts = urlsplit(reference)
    if parts.scheme in ("http", "https", "s3", "gs", "azure-blob"):
        raise SourceError(
            f"image {reference!r}: reading images over {parts.scheme} is not supported yet; export with local "
            "files, or sync them to a folder and pass --root"
        )
    if parts.path.startswith(LOCAL_FILES):
        relative = unquote((parse_qs(parts.query).get("d") or [""])[0])
        if root is None:
            raise SourceError(
                f"image {reference!r} is in Label Studio's local storage; pass --root with the folder its paths "
                "are relative to (LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)"
            )
        if "\x00" in relative:
            raise SourceError(f"image {reference!r}: a path cannot hold a NUL character; fix the task")
        resolved = (root / relative).resolve()
        if not resolved.is_relative_to(root):
            raise SourceError(f"image {reference!r} points outside --root {root}; fix the task or the root")
        return resolved
    if parts.path.startswith("/data/"):
        raise SourceError(
            f"image {reference!r} was uploaded to Label Studio; reading uploads is not supported yet, export with "
            "local files storage instead"
        )
    if "\x00" in reference:
        raise SourceError(f"image {reference!r}: a path cannot hold a NUL character; fix the task")
    image = Path(reference).expanduser()
    return image if image.is_absolute() else export.parent.resolve() / image


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise SourceError(f"cannot read {path} as JSON ({' '.join(str(err).split())}); pass a valid JSON file") from err


def _file_fingerprint(kind: str, path: Path) -> str:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"{kind}:{path.resolve()}:{digest}"


def _check_unique(source: Source) -> None:
    seen: set[str] = set()
    for item in source.items:
        if item.key in seen:
            raise SourceError(f"{source.location} lists {item.key!r} twice; keep one entry per image")
        seen.add(item.key)
