"""Corrections from Label Studio, kept as an on-disk COCO dataset that `minigpt-annotate finetune` reads directly.

Layout of the folder:
- `annotations.json`: COCO, `file_name` relative to the folder, boxes in pixels of the upright image;
- `images/task-<id>.<ext>`: a copy of each annotated task's image, fetched once;
- `state.json`: the submitted boxes per task and per Label Studio annotation (several annotators may label one task),
  from which `annotations.json` is rebuilt after every change. When several annotations exist for one task, the
  dataset holds the most recently submitted one (duplicated objects would teach the model to repeat boxes).
Every file is written atomically, and a file lock serialises writers across gunicorn workers.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from model.annotations import Annotation, Box, Category, Dataset, ImageRecord, Origin
from model.coco import write_coco
from model.errors import MiniGPTError
from model.files import write_bytes_atomic, write_text_atomic
from model.images import MODEL_FIT_PIXELS, load_image

from .regions import value_to_box

try:
    import fcntl
except ImportError:  # Windows: the in-process lock still serialises threads
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

COCO_NAME = "annotations.json"
STATE_NAME = "state.json"


class StoredBox(BaseModel):
    label: str
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the upright image


class StoredTask(BaseModel):
    image: str  # relative to the store's folder
    width: int
    height: int
    source: str  # the task's image reference in Label Studio
    annotations: dict[str, list[StoredBox]] = Field(default_factory=dict)  # Label Studio annotation id → boxes


class StoreState(BaseModel):
    version: int = 1
    categories: list[str] = Field(default_factory=list)  # in first-seen order: category ids stay stable
    tasks: dict[str, StoredTask] = Field(default_factory=dict)  # Label Studio task id → task


class CorrectionStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "images").mkdir(exist_ok=True)
        self.coco_path = self.root / COCO_NAME
        self._state_path = self.root / STATE_NAME
        self._lock = threading.Lock()

    def save(
        self,
        task_id: int,
        annotation_id: int,
        regions: list[tuple[str, dict]],
        *,
        source: str,
        fetch_image: Callable[[], bytes],
    ) -> dict:
        """Replace one annotation's boxes (label, Label Studio percent value); fetch the image the first time.

        Everything is checked before the first write: an annotation that cannot become COCO (a blank label, an
        unreadable image) is refused alone with a MiniGPTError and leaves the folder exactly as it was.
        """
        with self._locked() as state:
            task = state.tasks.get(str(task_id))
            new_image: tuple[str, bytes] | None = None
            if task is None:
                task, new_image = self._described_image(task_id, source, fetch_image())
            boxes = []
            for label, value in regions:
                box = value_to_box(value, task.width, task.height)
                if box is None:
                    log.warning("task %s: skipping a degenerate rectangle %s", task_id, value)
                    continue
                _check_annotation(annotation_id, label, box)
                boxes.append(StoredBox(label=label, bbox=box.xyxy))
            # Valid: only now does anything change, in memory and then on disk (the image copy, then the state).
            if new_image is not None:
                write_bytes_atomic(self.root / new_image[0], new_image[1])  # original bytes: EXIF stays with them
                state.tasks[str(task_id)] = task
            for stored in boxes:
                if stored.label not in state.categories:
                    state.categories.append(stored.label)
            task.annotations.pop(str(annotation_id), None)  # re-insert: the latest submission goes last
            task.annotations[str(annotation_id)] = boxes
            return {"task": task_id, "annotation": annotation_id, "boxes": len(boxes)}

    def delete(self, annotation_id: int, task_id: int | None = None) -> dict:
        """Forget one annotation; a task left with none is dropped from the dataset, with its image copy."""
        with self._locked() as state:
            removed = 0
            for key in [str(task_id)] if task_id is not None else list(state.tasks):
                task = state.tasks.get(key)
                if task is None or task.annotations.pop(str(annotation_id), None) is None:
                    continue
                removed += 1
                if not task.annotations:
                    del state.tasks[key]
                    with contextlib.suppress(FileNotFoundError):
                        (self.root / task.image).unlink()
            return {"task": task_id, "annotation": annotation_id, "removed": removed}

    # --- internals -----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[StoreState]:
        with self._lock, open(self.root / ".lock", "a") as lock_file:
            if fcntl is not None:
                fcntl.flock(lock_file, fcntl.LOCK_EX)
            state = self._read_state()
            yield state
            self._write(state)

    def _read_state(self) -> StoreState:
        if not self._state_path.exists():
            return StoreState()
        try:
            return StoreState.model_validate_json(self._state_path.read_text(encoding="utf-8"))
        except ValueError as err:
            raise MiniGPTError(
                f"the corrections state {self._state_path} is unreadable ({err}); restore it from a backup or move "
                "the folder aside to start a new one"
            ) from err

    def _write(self, state: StoreState) -> None:
        dataset = self.dataset(state)  # built before either file is written: a state that cannot be COCO is not saved
        write_text_atomic(self._state_path, json.dumps(state.model_dump(mode="json"), indent=1))
        write_coco(dataset, self.coco_path)

    def dataset(self, state: StoreState) -> Dataset:
        categories = [Category(id=i, name=name) for i, name in enumerate(state.categories, start=1)]
        images = [
            ImageRecord(
                path=self.root / task.image,
                width=task.width,
                height=task.height,
                annotations=[
                    Annotation(box=Box.from_xyxy(box.bbox), label=box.label, origin=Origin.manual)
                    for box in list(task.annotations.values())[-1]  # several annotators: the latest submission
                ],
                reviewed=True,
            )
            for _, task in sorted(state.tasks.items(), key=lambda item: int(item[0]) if item[0].isdigit() else 0)
        ]
        return Dataset(categories=categories, images=images)

    def _described_image(self, task_id: int, source: str, payload: bytes) -> tuple[StoredTask, tuple[str, bytes]]:
        """The task record for a newly fetched image, and the copy to write (path, bytes) once the rest is valid."""
        image = load_image(payload, fit_pixels=MODEL_FIT_PIXELS)  # raises a clear ImageLoadError for a corrupt file
        with Image.open(io.BytesIO(payload)) as raw:
            extension = (raw.format or "png").lower().replace("jpeg", "jpg")
        relative = f"images/task-{task_id}.{extension}"
        return StoredTask(image=relative, width=image.width, height=image.height, source=source), (relative, payload)


def _check_annotation(annotation_id: int, label: str, box: Box) -> None:
    """Refuse a box that `annotations.json` could not hold, naming the annotation and the fix."""
    try:
        Annotation(box=box, label=label, origin=Origin.manual)
    except ValueError as err:
        reasons = "; ".join(e["msg"] for e in err.errors()) if isinstance(err, ValidationError) else str(err)
        raise MiniGPTError(
            f"annotation {annotation_id}: label {label!r} cannot be stored ({reasons}); "
            "fix the label in Label Studio's labeling config and submit again"
        ) from None
