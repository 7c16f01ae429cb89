"""Background threads for everything slow: loading the model, running it, probing image files, reading an import.

Workers get immutable inputs, never touch widgets or the store (which belongs to the GUI thread), and report by
signals. Cancel is cooperative: a flag checked between images (and passed to the engine), never ``terminate()``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PySide6.QtCore import QObject, QThread, Signal

from annotator.core.engines import Cancelled, Engine, EngineError, EngineRequest
from annotator.core.exchange import ImportCancelled, ImportPlan
from annotator.core.folder import probe_image
from annotator.core.runs import Prompt
from annotator.core.sources import ModelSource
from model.errors import ImageLoadError, MiniGPTError

log = logging.getLogger(__name__)


def describe(err: BaseException) -> str:
    """A message for the UI: our errors already name cause and fix; anything else gets its type."""
    return str(err) if isinstance(err, MiniGPTError) else f"{type(err).__name__}: {err}"


class _StoppableThread(QThread):
    """A worker thread that stops at its next check once :meth:`cancel` is called (from any thread)."""

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._stop = threading.Event()

    def cancel(self) -> None:
        self._stop.set()

    @property
    def cancelled(self) -> bool:
        return self._stop.is_set()


class ModelLoader(QThread):
    loaded = Signal(object)  # Engine
    failed = Signal(str)

    def __init__(self, source: ModelSource, parent: QObject | None = None):
        super().__init__(parent)
        self.source = source

    def run(self) -> None:
        try:
            engine = self.source.open()
        except Exception as err:  # the UI must show every failure, not lose it in a thread
            log.exception("cannot open %s", self.source.describe())
            self.failed.emit(describe(err))
        else:
            self.loaded.emit(engine)


@dataclass(frozen=True)
class ImageJob:
    image_id: int
    path: Path
    prompts: tuple[Prompt, ...]


class ProposeWorker(_StoppableThread):
    """Runs the prompts of each image in turn; each image's results arrive whole, or not at all."""

    image_done = Signal(object, object)  # ImageJob, list[ProposalResult] in prompt order
    image_failed = Signal(object, str, bool)  # ImageJob, message, whether the image file itself is unreadable
    progress = Signal(int, int)  # images finished, total
    engine_failed = Signal(str)  # the model itself failed (e.g. the server went down): the run stops

    def __init__(self, engine: Engine, jobs: Sequence[ImageJob], parent: QObject | None = None):
        super().__init__(parent)
        self.engine = engine
        self.jobs = list(jobs)

    def run(self) -> None:
        for done, job in enumerate(self.jobs, start=1):
            if self._stop.is_set():
                return
            requests = [EngineRequest(job.path, p) for p in job.prompts]
            try:
                results = self.engine.propose(requests, should_stop=self._stop.is_set)
            except Cancelled:
                return
            except EngineError as err:  # every later image would fail the same way
                self.engine_failed.emit(describe(err))
                return
            except Exception as err:  # one bad image must not end a batch
                log.warning("%s: %s", job.path, describe(err))
                self.image_failed.emit(job, describe(err), isinstance(err, ImageLoadError))
            else:
                self.image_done.emit(job, results)
            self.progress.emit(done, len(self.jobs))


class ProbeWorker(_StoppableThread):
    """Reads the size of images not measured yet (headers only), so corrupt files are marked early."""

    # [(image id, (width, height) or an error message)], in chunks: the window saves and repaints once per chunk,
    # not once per file (a 10k-image folder would otherwise re-read the whole file list 10k times).
    probed = Signal(object)
    CHUNK = 256

    def __init__(self, files: Sequence[tuple[int, Path]], parent: QObject | None = None):
        super().__init__(parent)
        self.files = list(files)

    def run(self) -> None:
        for start in range(0, len(self.files), self.CHUNK):
            if self._stop.is_set():
                return
            self.probed.emit(
                [(image_id, probe_image(path)) for image_id, path in self.files[start : start + self.CHUNK]]
            )


class ImportWorker(_StoppableThread):
    """One step of a COCO import that needs no store: reading the file (:func:`read_import`) or finding the boxes the
    project already has (:func:`match_import`). The caller reads ``plan`` or ``error`` once it has finished; a
    cancelled step leaves both None."""

    progress = Signal(int, int)  # images done, total

    def __init__(self, step: ImportStep, path: Path, parent: QObject | None = None):
        super().__init__(parent)
        self.step = step
        self.path = path  # the COCO file
        self.plan: ImportPlan | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            self.plan = self.step(progress=self.progress.emit, should_stop=self._stop.is_set)
        except ImportCancelled:
            return
        except Exception as err:  # the UI must show every failure, not lose it in a thread
            log.warning("cannot import %s: %s", self.path, describe(err))
            self.error = describe(err)


class ImportStep(Protocol):
    """:func:`read_import` or :func:`match_import` with everything but progress and cancel bound."""

    def __call__(self, *, progress: Callable[[int, int], None], should_stop: Callable[[], bool]) -> ImportPlan: ...
