"""The main window: wires the panels, the canvas and the AI controller to the project session.

It holds no annotation state of its own: the session's store does, and every change goes through an undoable
edit. Panels and the canvas only report what the person did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QImage, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFileDialog, QInputDialog, QLabel, QMainWindow, QWidget

from annotator.core import edits, geometry
from annotator.core.display import load_display_image
from annotator.core.exchange import ExportReport
from annotator.core.folder import open_project, project_folder, reopen_project
from annotator.core.merging import visible
from annotator.core.records import BoxRow, BoxState
from annotator.core.runs import Prompt, RunError, detection_prompts, label_from_answer, plan_run
from annotator.core.shortcuts import MENUS, SHORTCUTS
from annotator.core.sources import ModelSource
from model.annotations import Box, Origin, Task
from model.errors import MiniGPTError

from .ai_controller import AIController
from .ai_panel import AIPanel
from .canvas import Canvas
from .canvas_tools import CanvasTools
from .dialogs import BatchDialog, ShortcutsDialog
from .file_panel import FilePanel
from .importer import CocoImporter
from .label_panel import LabelPanel
from .qimage import to_qimage
from .review_flow import ReviewFlow
from .session import RunSettings, Session
from .window_basics import WindowBasics
from .workers import ProbeWorker

log = logging.getLogger(__name__)


class MainWindow(QMainWindow):
    project_opened = Signal(object)  # the Session, once the window shows it

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setWindowTitle("minigpt-annotate")
        self.resize(1400, 900)
        self.session: Session | None = None
        self.ai: AIController | None = None
        self.importer: CocoImporter | None = None
        self._probe: ProbeWorker | None = None
        self.threshold = 0.0
        self._restoring = False

        self.canvas = Canvas()
        self.setCentralWidget(self.canvas)
        self.files = FilePanel()
        self.labels = LabelPanel()
        self.ai_panel = AIPanel()
        self._dock("Images", self.files, Qt.DockWidgetArea.LeftDockWidgetArea)
        self._dock("AI assistant", self.ai_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self._dock("Labels", self.labels, Qt.DockWidgetArea.RightDockWidgetArea)
        self.model_status = QLabel("No model")
        self.statusBar().addPermanentWidget(self.model_status)
        self.tools = CanvasTools(self)  # object list, overview, canvas toggles, label tools (issue 17)

        self.review, self.basics = ReviewFlow(self), WindowBasics(self)  # issue 17's review flow, window basics
        self.actions_by_name = self._make_actions()
        self._make_menus()
        self.review.install()
        self.basics.install()
        self.canvas.box_drawn.connect(self._box_drawn)
        self.canvas.box_edited.connect(self._box_edited)
        self.canvas.box_activated.connect(self._box_activated)
        self.canvas.nudge_requested.connect(self._nudge)
        self.files.image_chosen.connect(self.go_to)
        self.labels.label_added.connect(self._add_label)
        self.labels.apply_requested.connect(self._relabel_selected)
        self.labels.rename_requested.connect(self._ask_rename_label)
        self.labels.prompt_requested.connect(self._ask_label_prompt)
        self.labels.delete_requested.connect(self.delete_label)
        self.ai_panel.run_requested.connect(self.run_model)
        self.ai_panel.cancel_requested.connect(self._cancel)
        self.ai_panel.batch_requested.connect(self.batch_run)
        self.ai_panel.accept_all_requested.connect(self.accept_all)
        self.ai_panel.reject_all_requested.connect(self.reject_all)
        self.ai_panel.threshold_changed.connect(self._threshold_changed)
        self.ai_panel.apply_answer_requested.connect(self._apply_identified)
        self._identify_target: int | None = None  # the box an [identify] run asked about
        self._suggested_label: str | None = None
        # The panel's state is part of "where I left off": saved as it changes, like everything else.
        self.ai_panel.settings_edited.connect(self._save_settings)
        self._set_enabled(False)

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> None:
        dock = QDockWidget(title, self)
        dock.setObjectName(title)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)

    # --- actions and menus -----------------------------------------------------------------------------------------
    def _make_actions(self) -> dict[str, QAction]:
        handlers: dict[str, Callable[[], object]] = {
            "open_folder": self._choose_folder,
            "save": lambda: self.statusBar().showMessage("Everything is saved: each change is stored as you make it"),
            "export_coco": self._choose_export,
            "next_image": lambda: self._step(1),
            "previous_image": lambda: self._step(-1),
            "next_unreviewed": lambda: self._step(1, unreviewed=True),
            "previous_unreviewed": lambda: self._step(-1, unreviewed=True),
            "next_riskiest": self._riskiest,
            "toggle_reviewed": self.toggle_reviewed,
            "draw_box": lambda: self.set_drawing(True),
            "edit_mode": lambda: self.set_drawing(False),
            "delete": self.delete_selected,
            "undo": lambda: self.session and self.session.undo_stack.undo(),
            "redo": lambda: self.session and self.session.undo_stack.redo(),
            "run_model": self.run_model,
            "focus_query": self.ai_panel.focus_query,
            "batch_run": self.batch_run,
            "cancel_run": self._cancel,
            "accept_selected": self.accept_selected,
            "accept_all": self.accept_all,
            "reject_all": self.reject_all,
            "fit": self.canvas.fit,
            "zoom_in": lambda: self.canvas.zoom(1.25),
            "zoom_out": lambda: self.canvas.zoom(0.8),
            "help": lambda: ShortcutsDialog(self).exec(),
            **self.tools.handlers(),
        }
        handlers |= self.review.handlers() | self.basics.handlers()  # issue 17's actions
        actions = {}
        for shortcut in SHORTCUTS:
            action = QAction(shortcut.text, self)
            action.setShortcuts([QKeySequence(keys) for keys in shortcut.keys])
            action.triggered.connect(handlers[shortcut.action])
            if shortcut.canvas_only:
                action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
                self.canvas.addAction(action)
            else:
                self.addAction(action)  # letters still type into text fields: those take their own keys first
            actions[shortcut.action] = action
        load = QAction("Load a local model folder…", self)
        load.triggered.connect(self._choose_model_folder)
        connect = QAction("Connect to a minigpt-annotate server…", self)
        connect.triggered.connect(self._choose_server)
        export_reviewed = QAction("Export COCO (reviewed images only)…", self)
        export_reviewed.triggered.connect(lambda: self._choose_export(reviewed_only=True))
        import_action = QAction("Import COCO…", self)
        import_action.triggered.connect(self._choose_import)
        actions |= {"load_model": load, "connect_server": connect, "export_reviewed": export_reviewed}
        actions["import_coco"] = import_action
        return actions

    def _make_menus(self) -> None:
        a = self.actions_by_name
        for title, names in MENUS.items():
            menu = self.menuBar().addMenu(title)
            for name in names:
                menu.addAction(a[name])

    def _set_enabled(self, enabled: bool) -> None:
        for name, action in self.actions_by_name.items():
            if name not in ("open_folder", "help", "load_model", "connect_server", "quit"):
                action.setEnabled(enabled)

    # --- project ---------------------------------------------------------------------------------------------------
    def open_folder(
        self, folder: str | Path | None = None, store: str | Path | None = None, source: ModelSource | None = None
    ) -> None:
        """Open ``folder`` (with its store next to it, or at ``store``) and go back to where the user left off; load
        ``source`` (the command line's), else the model the project remembers."""
        try:
            project = open_project(folder, store) if folder is not None else reopen_project(store or "")
            root = Path(folder) if folder is not None else project_folder(project)
        except MiniGPTError as err:
            self.show_error(str(err))
            return
        self.set_session(Session(project, root.resolve(), self), source)

    def set_session(self, session: Session, source: ModelSource | None = None) -> None:
        self.close_project()
        self.session = session
        self.ai = AIController(session, self)
        self.importer = CocoImporter(session, self)
        self.importer.done.connect(lambda message: self.statusBar().showMessage(message, 15_000))
        self.importer.failed.connect(self.show_error)
        session.images_changed.connect(self._refresh_files)
        session.boxes_changed.connect(self._boxes_changed)
        session.labels_changed.connect(self._refresh_labels)
        session.current_changed.connect(self._show_current)
        session.error.connect(self.show_error)
        self.ai.engine_changed.connect(self._engine_changed)
        self.ai.busy_changed.connect(self.ai_panel.set_busy)
        self.ai.progress.connect(self.ai_panel.set_progress)
        self.ai.answer.connect(self.ai_panel.show_answer)
        self.ai.identified.connect(self._identified)
        self.ai.message.connect(self.statusBar().showMessage)
        self.ai.failed.connect(self.show_error)
        self._restore_settings()
        self._refresh_labels()
        self._refresh_files()
        self._set_enabled(True)
        self.project_opened.emit(session)
        session.restore_current()
        self._probe_sizes()
        try:
            saved = source or session.model_source()
        except MiniGPTError as err:
            self.show_error(str(err))
            return
        if saved is not None and self.ai.engine is None:
            self.ai.load(saved)

    def close_project(self) -> None:
        if self.session is None:
            return
        if self.ai is not None:
            self.ai.cancel()
            self.ai.wait()
        if self._probe is not None:
            self._probe.cancel()
            self._probe.wait()
            self._probe = None
        if self.importer is not None:
            self.importer.shutdown()
            self.importer = None
        self._save_settings()
        self.session.close()
        self.session.deleteLater()
        self.session = None

    def load_model(self, source: ModelSource) -> None:
        if self.ai is None:
            self.show_error("Open a folder first (File → Open folder)")
            return
        self.ai.load(source)

    def _restore_settings(self) -> None:
        assert self.session is not None
        settings = self.session.run_settings()
        self._restoring = True  # the panel's change signals must not save half-restored state
        try:
            self.ai_panel.set_threshold(settings.threshold)
            self.ai_panel.set_task(settings.task)
            self.ai_panel.set_query(settings.query)
        finally:
            self._restoring = False

    def _save_settings(self) -> None:
        if self.session is None or self._restoring:
            return
        panel = self.ai_panel
        self.session.save_run_settings(RunSettings(panel.current_task(), panel.query_text(), panel.threshold_value_f()))

    def _probe_sizes(self) -> None:
        assert self.session is not None
        pending = [(row.id, self.session.path_of(row)) for row in self.session.images() if row.width is None]
        if not pending:
            return
        probe = ProbeWorker(pending, self)
        probe.probed.connect(self.session.record_probes)
        self._probe = probe
        probe.start()

    # --- views -----------------------------------------------------------------------------------------------------
    def _refresh_files(self) -> None:
        if self.session is None:
            return
        images = self.session.images()
        self.files.set_images(images)
        reviewed = sum(row.reviewed for row in images)
        self.setWindowTitle(f"minigpt-annotate: {self.session.folder.name} ({reviewed}/{len(images)} reviewed)")

    def _refresh_labels(self) -> None:
        if self.session is not None:
            self.labels.set_labels(self.session.labels())

    def _colors(self) -> dict[str, str]:
        return {label.name: label.color for label in self.session.labels()} if self.session else {}

    def _boxes_changed(self, image_id: int) -> None:
        if self.session is not None and image_id == self.session.current_id:
            self.canvas.set_boxes(visible(self.session.boxes(image_id), self.threshold), self._colors())

    def _show_current(self, image_id: int) -> None:
        if self.session is None:
            return
        self.files.set_current(image_id if image_id >= 0 else None)
        self._identify_target = None  # an [identify] answer is about a box of the image left behind
        self.ai_panel.suggest_label(None)
        if image_id < 0:
            self.canvas.show_image(None, 1, 1)
            return
        row = self.session.image(image_id)
        path = self.session.path_of(row)
        try:
            shown = load_display_image(path)
        except MiniGPTError as err:
            self.session.mark_unreadable(image_id, str(err))
            self.canvas.show_image(None, 1, 1)
            self.statusBar().showMessage(f"{row.path} cannot be shown: {err}")
            return
        self.session.record_shown(image_id, shown.width, shown.height)
        image: QImage = to_qimage(shown.image)
        self.canvas.show_image(image, shown.width, shown.height)
        self._boxes_changed(image_id)
        self.statusBar().showMessage(f"{row.path}: {shown.width}×{shown.height}")

    def _engine_changed(self, text: str) -> None:
        self.model_status.setText(text)
        self.ai_panel.show_model_status(text)

    def _threshold_changed(self, value: float) -> None:
        self.threshold = value
        if self.session is not None and self.session.current_id is not None:
            self._boxes_changed(self.session.current_id)

    def show_error(self, message: str) -> None:
        log.warning("%s", message)
        self.statusBar().showMessage(message, 15_000)
        self.ai_panel.show_status(message)

    # --- navigation ------------------------------------------------------------------------------------------------
    def go_to(self, image_id: int) -> None:
        if self.session is not None:
            self.session.set_current(image_id)

    def _step(self, step: int, *, unreviewed: bool = False) -> None:
        if self.session is None:
            return
        target = self.session.neighbour(step, unreviewed=unreviewed)
        if target is None:
            self.statusBar().showMessage("No more unreviewed images" if unreviewed else "No more images")
        else:
            self.session.set_current(target)

    def _riskiest(self) -> None:
        if self.session is None:
            return
        target = self.session.riskiest()
        if target is None:
            self.statusBar().showMessage("No proposals left to review")
        else:
            self.session.set_current(target)

    def set_drawing(self, drawing: bool) -> None:
        self.canvas.set_drawing(drawing)
        self.statusBar().showMessage("Drag on the image to draw a box (Esc to stop)" if drawing else "")

    # --- editing ---------------------------------------------------------------------------------------------------
    def current_rows(self) -> list[BoxRow]:
        if self.session is None or self.session.current_id is None:
            return []
        return self.session.boxes(self.session.current_id)

    def _box_drawn(self, box: Box) -> None:
        if self.session is None or self.session.current_id is None:
            return
        label = self.labels.current_label()
        if label is None:
            label, ok = QInputDialog.getText(self, "Label", "Label for the new box:")
            if not ok or not label.strip():
                return
            self._add_label(label)
        row = BoxRow(self.session.current_id, label.strip(), box, state=BoxState.annotation, origin=Origin.manual)
        self.session.push(edits.add_boxes(f"Draw {label}", self.session.current_id, [row]))

    def _nudge(self, dx: float, dy: float) -> None:
        rows = self.canvas.selected_rows()
        if self.session is None or not rows:
            return
        width, height = self.canvas.image_size
        moved = [row.moved_to(geometry.translate(row.box, dx, dy, width, height)) for row in rows]
        self.session.push(edits.replace_boxes(f"Nudge {len(rows)} box(es)", rows, moved))

    def _box_activated(self, row: BoxRow) -> None:
        if self.session is not None and row.is_proposal:
            self.session.push(self.review.accept_edit([row]))

    def _box_edited(self, row: BoxRow, box: Box) -> None:
        if self.session is not None:
            self.session.push(edits.replace_boxes(f"Move {row.label}", [row], [row.moved_to(box)]))

    def _add_label(self, name: str) -> None:
        if self.session is not None:
            self.session.add_label(name)

    def _ask_rename_label(self, old: str) -> None:
        new, ok = QInputDialog.getText(
            self, "Rename label", f"New name for {old!r} (an existing name merges):", text=old
        )
        if ok:
            self.rename_label(old, new)

    def rename_label(self, old: str, new: str) -> None:
        if self.session is not None and self.session.rename_label(old, new):
            self.labels.set_current_label(new.strip())

    def delete_label(self, name: str) -> None:
        if self.session is not None:
            self.session.delete_label(name)

    def _ask_label_prompt(self, name: str) -> None:
        if self.session is None:
            return
        current = next((label.prompt for label in self.session.labels() if label.name == name), None)
        prompt, ok = QInputDialog.getText(
            self, "Model prompt", f"What to ask the model for {name!r} (empty: the name itself):", text=current or ""
        )
        if ok:
            self.session.set_label_prompt(name, prompt)

    def _relabel_selected(self, label: str | None) -> None:
        rows = self.canvas.selected_rows()
        if self.session is None or not rows or not label:
            return
        self.session.push(edits.replace_boxes(f"Relabel as {label}", rows, [r.relabelled(label) for r in rows]))

    def delete_selected(self) -> None:
        rows = self.canvas.selected_rows()
        if self.session is not None and rows:
            self.session.push(edits.remove_boxes(f"Delete {len(rows)} box(es)", rows))

    def accept_selected(self) -> None:
        rows = [row for row in self.canvas.selected_rows() if row.is_proposal]
        if self.session is not None and rows:
            self.session.push(self.review.accept_edit(rows))

    def accept_all(self) -> None:
        """Accept the proposals the threshold shows on this image; hidden weak ones stay proposals."""
        rows = [row for row in visible(self.current_rows(), self.threshold) if row.is_proposal]
        if self.session is not None and rows:
            self.session.push(self.review.accept_edit(rows))

    def reject_all(self) -> None:
        rows = [row for row in self.current_rows() if row.is_proposal]
        if self.session is not None and rows:
            self.session.push(edits.reject(rows))

    def toggle_reviewed(self) -> None:
        if self.session is None or self.session.current_id is None:
            return
        row = self.session.image(self.session.current_id)
        if not row.reviewed and not self.review.confirm_reviewed(row):
            return
        text = "Mark unreviewed" if row.reviewed else "Mark reviewed"
        self.session.push(edits.ReviewedChange(text, row.id, not row.reviewed, row.reviewed))

    # --- model -----------------------------------------------------------------------------------------------------
    def run_model(self) -> None:
        if self.session is None or self.ai is None or self.session.current_id is None:
            return
        self._save_settings()
        if self.ai.engine is None and not self.ai.loading:
            self.show_error("No model loaded: load a model folder or connect to a server (Model menu)")
            return
        selected = self.canvas.selected_rows()
        try:
            prompts = plan_run(
                self.ai_panel.current_task(),
                self.ai_panel.query_text(),
                self.session.labels(),
                current_label=self.labels.current_label(),
                selected_box=selected[0].box if len(selected) == 1 else None,
            )
        except RunError as err:
            self.show_error(str(err))
            return
        self._identify_target = selected[0].id if prompts[0].task is Task.identify else None
        self.ai_panel.suggest_label(None)
        self.ai.run_on_image(self.session.current_id, prompts)

    def _identified(self, image_id: int, answer: str) -> None:
        """Offer the answer as the box's label; the person decides (model output never relabels a box itself)."""
        if self.session is None or self._identify_target is None or image_id != self.session.current_id:
            return
        self._suggested_label = label_from_answer(answer, self.session.labels())
        self.ai_panel.suggest_label(self._suggested_label)

    def _apply_identified(self) -> None:
        if self.session is None or self._identify_target is None or self._suggested_label is None:
            return
        row = next((r for r in self.current_rows() if r.id == self._identify_target), None)
        if row is None:
            self.show_error("The box the model was asked about is gone")
            return
        label = self._suggested_label
        self.session.add_label(label)
        self.session.push(edits.replace_boxes(f"Relabel as {label}", [row], [row.relabelled(label)]))
        self.ai_panel.suggest_label(None)

    def batch_run(self) -> None:
        if self.session is None or self.ai is None:
            return
        dialog = BatchDialog(self.session.labels(), self, counts=self.review.batch_counts())
        if dialog.exec() != BatchDialog.DialogCode.Accepted:
            return
        options = dialog.options()
        chosen = [label for label in self.session.labels() if label.name in options.labels]
        try:
            prompts = detection_prompts(chosen) if chosen else []
            if options.extra.strip():
                prompts += detection_prompts(self.session.labels(), options.extra)
        except MiniGPTError as err:
            self.show_error(str(err))
            return
        self.start_batch(prompts, unreviewed_only=options.unreviewed_only)

    def start_batch(self, prompts: list[Prompt], *, unreviewed_only: bool) -> bool:
        if self.session is None or self.ai is None:
            return False
        if not prompts:
            self.show_error("Choose at least one label to detect")
            return False
        images = self.review.batch_images(unreviewed_only=unreviewed_only)
        return self.ai.run_batch([row.id for row in images], prompts)

    def _cancel(self) -> None:
        if self.ai is not None:
            self.ai.cancel()

    def _choose_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder (config.json inside)")
        if folder:
            self.load_model(ModelSource("local", folder))

    def _choose_server(self) -> None:
        url, ok = QInputDialog.getText(self, "Server", "URL of minigpt-annotate serve:", text=self.basics.last_server())
        if ok and url.strip():
            self.basics.remember_server(url.strip())
            self.load_model(ModelSource("server", url.strip()))

    # --- files -----------------------------------------------------------------------------------------------------
    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder of images")
        if folder:
            self.open_folder(folder)

    def _choose_export(self, *, reviewed_only: bool = False) -> None:
        if self.session is None:
            return
        default = str(self.session.folder.with_name(self.session.folder.name + "-coco.json"))
        path, _ = QFileDialog.getSaveFileName(self, "Export COCO", default, "COCO JSON (*.json)")
        if path:
            self.export_to(Path(path), reviewed_only=reviewed_only)

    def export_to(self, path: Path, *, reviewed_only: bool = False) -> ExportReport | None:
        if self.session is None:
            return None
        try:
            report = self.session.export_coco(path, reviewed_only=reviewed_only)
        except MiniGPTError as err:
            self.show_error(f"Export failed, nothing was written: {err}")
            return None
        self.statusBar().showMessage(f"Exported {report}", 15_000)
        return report

    def _choose_import(self) -> None:
        if self.session is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Import COCO", str(self.session.folder), "COCO JSON (*.json)")
        if path:
            self.import_from(Path(path))

    def import_from(self, path: Path) -> bool:
        """Start importing a COCO file in the background; the status bar tells the outcome in one line."""
        return self.importer is not None and self.importer.start(path)

    def closeEvent(self, event: QCloseEvent) -> None:
        self.close_project()
        super().closeEvent(event)
