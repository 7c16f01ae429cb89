"""Model work for the window: load a model source, run it on the current image or over the folder, and turn the
answers into proposals through undoable edits. One job at a time; the UI stays responsive meanwhile."""

from __future__ import annotations

from collections.abc import Sequence

from PySide6.QtCore import QObject, Signal

from annotator.core import edits
from annotator.core.edits import BatchProposals
from annotator.core.engines import Engine
from annotator.core.merging import proposal_rows
from annotator.core.records import BoxRow
from annotator.core.review_flow import drop_rejected
from annotator.core.runs import Prompt
from annotator.core.sources import ModelSource
from model.annotations import Task
from model.errors import MiniGPTError
from model.results import ProposalResult

from .session import Session
from .workers import ImageJob, ModelLoader, ProposeWorker


class AIController(QObject):
    engine_changed = Signal(str)  # what the model status line says
    busy_changed = Signal(bool, str)  # busy, what is running
    progress = Signal(int, int)
    answer = Signal(str)  # text answers ([identify], [vqa], caption, chat, or what detection said)
    identified = Signal(int, str)  # image id, the [identify] answer (the window may suggest it as a label)
    message = Signal(str)  # the outcome of a run, for the status bar
    failed = Signal(str)  # errors the user must see

    def __init__(self, session: Session, parent: QObject | None = None):
        super().__init__(parent)
        self.session = session
        self.engine: Engine | None = None
        self.source: ModelSource | None = None
        self._loader: ModelLoader | None = None
        self._abandoned: list[ModelLoader] = []  # cancelled loads still finishing in their threads; dropped then
        self._worker: ProposeWorker | None = None
        self._waiting: list[ImageJob] | None = None  # a run asked for while the model loads: starts when ready
        self._batch_rows: list[BoxRow] | None = None  # set while a batch runs
        self._failures = 0
        self._answering = True  # False after the engine itself failed, until it answers again
        self._previous: tuple[Engine | None, ModelSource | None] = (None, None)  # what a cancelled load keeps

    # --- model sources ---------------------------------------------------------------------------------------------
    def load(self, source: ModelSource) -> None:
        if self.loading:
            self._cancel_load()  # the newer choice wins (a command line's over the project's remembered one)
        self._previous = (self.engine, self.source)
        self.source = source = source.anchored()  # remembered as loaded: from any working directory
        self.engine_changed.emit(f"Loading {source.describe()}…")
        self.busy_changed.emit(True, f"Loading {source.describe()}…")
        loader = ModelLoader(source, self)
        loader.loaded.connect(self._loaded)
        loader.failed.connect(self._load_failed)
        loader.finished.connect(loader.deleteLater)
        self._loader = loader
        loader.start()

    @property
    def loading(self) -> bool:
        return self._loader is not None

    @property
    def busy(self) -> bool:
        return self._worker is not None or self._loader is not None

    def use(self, engine: Engine, source: ModelSource | None = None) -> None:
        """Use an engine that is already loaded (another window's, or one a script made)."""
        self.source = source
        self._loaded(engine)

    def _loaded(self, engine: Engine) -> None:
        if self._from_abandoned():
            return  # cancelled while it loaded: dropped (its memory goes with the last reference)
        self._loader = None
        self.engine = engine
        self._answering = True
        if self.source is not None:
            self.session.remember_model_source(self.source)
        self.busy_changed.emit(False, "")
        self.engine_changed.emit(f"Ready: {engine.description}")
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            self._start(waiting)

    def _load_failed(self, message: str) -> None:
        if self._from_abandoned():
            return
        self._loader = None
        self.engine = None
        self._drop_waiting()
        self.busy_changed.emit(False, "")
        self.engine_changed.emit("No model loaded: choose one in the Model menu")
        self.failed.emit(f"Cannot load the model: {message}")

    def _from_abandoned(self) -> bool:
        """Whether the loader reporting now is one whose load was cancelled (it may report after a newer load began)."""
        sender = self.sender()
        return isinstance(sender, ModelLoader) and sender is not self._loader

    def _forget(self) -> None:
        loader = self.sender()
        if loader in self._abandoned:
            self._abandoned.remove(loader)  # type: ignore[arg-type]

    def _cancel_load(self) -> None:
        """Stop waiting for the loading model: the thread cannot be interrupted inside a framework's load, so it
        finishes in the background and what it loads is dropped; the model in use before, if any, stays."""
        loader, self._loader = self._loader, None
        if loader is None:
            return
        self._abandoned.append(loader)
        loader.finished.connect(self._forget)
        self.engine, self.source = self._previous
        self._drop_waiting()
        if self.engine is not None:
            self.engine_changed.emit(f"Ready: {self.engine.description}")
        else:
            self.engine_changed.emit("No model loaded: choose one in the Model menu")
        self.busy_changed.emit(False, f"Cancelled loading {loader.source.describe()}")

    def _drop_waiting(self) -> None:
        if self._waiting is not None:
            self._waiting = None
            self._batch_rows = None

    # --- runs ------------------------------------------------------------------------------------------------------
    def run_on_image(self, image_id: int, prompts: Sequence[Prompt]) -> bool:
        """Ask the model about one image; its proposals become one undo step."""
        return self._start([ImageJob(image_id, self.session.path_of(self.session.image(image_id)), tuple(prompts))])

    def run_batch(self, image_ids: Sequence[int], prompts: Sequence[Prompt]) -> bool:
        """Detection over many images; each image's proposals are saved as they arrive, the batch is one undo step."""
        jobs = [ImageJob(i, self.session.path_of(self.session.image(i)), tuple(prompts)) for i in image_ids]
        if not jobs:
            self.message.emit("No images to run on")
            return False
        self._batch_rows = []
        return self._start(jobs)

    def cancel(self) -> None:
        if self._loader is not None:
            self._cancel_load()
        if self._worker is not None:
            self._worker.cancel()
            self.busy_changed.emit(True, "Cancelling after the current image…")

    def wait(self, ms: int = 60_000) -> bool:
        """Block until the running job ends, and cancelled loads with it (tests and closing the window)."""
        threads = [t for t in (self._worker, self._loader, *self._abandoned) if t is not None]
        return all(thread.wait(ms) for thread in threads)

    def _start(self, jobs: list[ImageJob]) -> bool:
        if self.loading and self._worker is None and self._waiting is None:
            self._waiting = jobs  # asked for before the model is ready: run it when it is
            what = "the folder" if self._batch_rows is not None else "this image"
            self.busy_changed.emit(True, f"The model is loading; the run on {what} starts when it is ready")
            return True
        if self.engine is None:
            self._batch_rows = None
            self.failed.emit("No model loaded: load a model folder or connect to a server (Model menu)")
            return False
        if self.busy:
            self._batch_rows = None
            self.failed.emit("The model is busy; wait for the current run or cancel it")
            return False
        self._failures = 0
        worker = ProposeWorker(self.engine, jobs, self)
        worker.image_done.connect(self._image_done)
        worker.image_failed.connect(self._image_failed)
        worker.progress.connect(self.progress)
        worker.engine_failed.connect(self._engine_failed)
        worker.finished.connect(self._worker_finished)
        self._worker = worker
        what = "Running over the folder…" if self._batch_rows is not None else "Running the model…"
        self.busy_changed.emit(True, what)
        worker.start()
        return True

    def _engine_failed(self, message: str) -> None:
        """The engine itself failed (the server went away): the status says so until a run succeeds again."""
        self._answering = False
        where = self.engine.description if self.engine is not None else "the model"
        self.engine_changed.emit(f"Not answering: {where}; Run tries again")
        self.failed.emit(f"The model stopped: {message}")

    def _image_done(self, job: ImageJob, results: list[ProposalResult]) -> None:
        if not self._answering and self.engine is not None:  # it answers again
            self._answering = True
            self.engine_changed.emit(f"Ready: {self.engine.description}")
        existing = self.session.boxes(job.image_id)
        new: list[BoxRow] = []
        texts = []
        for prompt, result in zip(job.prompts, results, strict=True):
            if not result.task.answers_with_boxes:
                texts.append(result.text)
                if result.task is Task.identify and self._batch_rows is None:
                    self.identified.emit(job.image_id, result.text)
                continue
            new += proposal_rows(result.proposals, job.image_id, [*existing, *new], label=prompt.label)
        new, rejected = drop_rejected(new, self.session.rejections(job.image_id))
        if texts:
            self.answer.emit("\n\n".join(texts))
        if self._batch_rows is not None:
            try:  # saved now: a cancel or crash keeps this image's results
                self._batch_rows += self.session.save_batch_proposals(job.image_id, new)
            except MiniGPTError as err:  # e.g. the disk is full: stop rather than run on without saving
                self.failed.emit(f"The batch stopped: {err}")
                self.cancel()
            return
        if new:
            task = job.prompts[0].task.identifier
            query = ", ".join(p.query or "" for p in job.prompts if p.query)
            self.session.push(edits.add_boxes(f"Run {task} {query}".strip(), job.image_id, new))
        boxes = any(p.task.answers_with_boxes for p in job.prompts)
        if boxes:
            found = sum(len(r.proposals) for r in results)
            skipped = "duplicates of existing boxes" + (f" and {rejected} rejected before" if rejected else "")
            self.message.emit(f"{len(new)} new proposal(s) ({found} found, {skipped} skipped)")

    def _image_failed(self, job: ImageJob, message: str, unreadable: bool) -> None:
        self._failures += 1
        if self._batch_rows is None:
            self.failed.emit(f"{job.path.name}: {message}")
        if unreadable:  # marked in the file list, and skipped from now on
            self.session.mark_unreadable(job.image_id, message)

    def _worker_finished(self) -> None:
        worker, self._worker = self._worker, None
        rows, self._batch_rows = self._batch_rows, None
        if rows is not None and worker is not None:
            images = len({row.image_id for row in rows})
            if rows:
                self.session.push(BatchProposals(f"Batch detection ({images} images)", rows), applied=True)
            state = "cancelled" if worker.cancelled else "done"
            failures = f", {self._failures} image(s) failed" if self._failures else ""
            self.message.emit(f"Batch {state}: {len(rows)} proposal(s) on {images} image(s){failures}")
        elif worker is not None and worker.cancelled:
            self.message.emit("Cancelled: the model stopped and nothing was added")
        if worker is not None:
            worker.deleteLater()
        self.busy_changed.emit(False, "")
