"""The AI panel: task, query (runs on Enter), score threshold, accept/reject, the model's text answers, batch.

The window uses it only through the methods and signals below (what the person asked for, what to show); the child
widgets are the panel's own business, so the layout can change without touching the window.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSlider,
    QVBoxLayout,
    QWidget,
)

from model.annotations import Task

TASK_CHOICES: list[tuple[str, Task]] = [
    ("[detection] every instance", Task.detection),
    ("[refer] one object", Task.refer),
    ("[grounding] describe with boxes", Task.grounding),
    ("[identify] the selected box", Task.identify),
    ("[vqa] answer a question", Task.vqa),
    ("[caption] describe briefly", Task.caption),
    ("chat", Task.chat),
]

PLACEHOLDERS = {
    Task.detection: "what to find, e.g. red balloon, dog (empty: every label)",
    Task.refer: "one object, e.g. the dog on the left",
    Task.grounding: "optional: describe this image in detail",
    Task.identify: "optional: what is this?",
    Task.vqa: "a question about the image",
    Task.caption: "optional",
    Task.chat: "anything",
}


class AIPanel(QWidget):
    run_requested = Signal()
    cancel_requested = Signal()
    batch_requested = Signal()
    accept_all_requested = Signal()
    reject_all_requested = Signal()
    threshold_changed = Signal(float)  # while the slider moves: the canvas filters live
    settings_edited = Signal()  # the person finished changing the task, the query or the threshold: worth saving
    apply_answer_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.model_status = QLabel("No model loaded: choose one in the Model menu")
        self.model_status.setWordWrap(True)
        self.task = QComboBox()
        # Narrow enough that the canvas keeps most of a 1024-pixel-wide window (the list still shows whole texts).
        self.task.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.task.setMinimumContentsLength(12)
        for text, task in TASK_CHOICES:
            self.task.addItem(text, task.value)
        self.task.currentIndexChanged.connect(self._task_changed)
        self.task.currentIndexChanged.connect(lambda _: self.settings_edited.emit())
        self.query = QLineEdit()
        self.query.returnPressed.connect(self.run_requested)
        self.query.editingFinished.connect(self.settings_edited)
        self.threshold = QSlider(Qt.Orientation.Horizontal)
        self.threshold.setRange(0, 100)
        self.threshold_value = QLabel()
        self.threshold.valueChanged.connect(self._threshold_moved)
        self.threshold.sliderReleased.connect(self.settings_edited)
        self.run_button = QPushButton("Run (I)")
        self.run_button.clicked.connect(self.run_requested)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.cancel_button.setEnabled(False)
        self.accept_all = QPushButton("Accept all")
        self.accept_all.clicked.connect(self.accept_all_requested)
        self.reject_all = QPushButton("Reject all")
        self.reject_all.clicked.connect(self.reject_all_requested)
        self.batch_button = QPushButton("Detect over folder…")
        self.batch_button.setToolTip("Run detection over the whole folder (Ctrl+B)")
        self.batch_button.clicked.connect(self.batch_requested)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self._busy_text = ""  # what set_busy last said was running
        self.answer = QPlainTextEdit()
        self.answer.setReadOnly(True)
        self.answer.setPlaceholderText("The model's text answers appear here.")
        self.answer.setMaximumHeight(140)
        self.apply_answer = QPushButton()
        self.apply_answer.setVisible(False)  # shown when an [identify] answer names a label for the box
        self.apply_answer.clicked.connect(self.apply_answer_requested)

        form = QFormLayout()
        form.addRow("Task", self.task)
        form.addRow("Query", self.query)
        slider = QHBoxLayout()
        slider.addWidget(self.threshold)
        slider.addWidget(self.threshold_value)
        form.addRow("Min score", slider)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        review = QHBoxLayout()
        review.addWidget(self.accept_all)
        review.addWidget(self.reject_all)
        proposals = QGroupBox("Proposals (dashed)")
        proposals.setToolTip("Proposals are drawn dashed until accepted")
        proposals.setLayout(review)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.model_status)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(proposals)
        layout.addWidget(self.batch_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.answer)
        layout.addWidget(self.apply_answer)
        layout.addStretch(1)
        self._task_changed()
        self._threshold_moved(self.threshold.value())

    # --- state -----------------------------------------------------------------------------------------------------
    def current_task(self) -> Task:
        return Task(self.task.currentData())  # Qt hands back the plain string value

    def set_task(self, task: Task) -> None:
        for i in range(self.task.count()):
            if self.task.itemData(i) == Task(task).value:
                self.task.setCurrentIndex(i)

    def query_text(self) -> str:
        return self.query.text()

    def set_query(self, text: str) -> None:
        self.query.setText(text)

    def focus_query(self) -> None:
        """Put the cursor in the query field, to type a new question."""
        self.query.setFocus()

    def threshold_value_f(self) -> float:
        return self.threshold.value() / 100.0

    def set_threshold(self, value: float) -> None:
        self.threshold.setValue(round(value * 100))

    def set_busy(self, busy: bool, text: str = "") -> None:
        """While a model job runs: Cancel is the way out, and a second run cannot start. ``text`` says what runs
        (or, at the end, what happened); an end without one clears only what was running, so an error shown
        meanwhile stays until the next success."""
        self.run_button.setEnabled(not busy)
        self.batch_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)
        self.progress.setVisible(busy)
        if busy:
            self.progress.setRange(0, 0)  # busy until the first progress report
        if busy or text:
            self.status.setText(text)
            self._busy_text = text if busy else ""
        elif self.status.text() == self._busy_text:
            self.status.clear()

    def set_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)

    def show_progress_text(self, text: str) -> None:
        """What the progress bar says, e.g. "3 / 17, about 40 s left"."""
        self.progress.setFormat(text)

    def show_answer(self, text: str) -> None:
        self.answer.setPlainText(text)

    def show_status(self, text: str) -> None:
        """What happened last (an error, or what is running), shown until something else happens."""
        self.status.setText(text)

    def show_model_status(self, text: str) -> None:
        self.model_status.setText(text)

    def suggest_label(self, label: str | None) -> None:
        """Offer ``label`` for the box the model was asked about (one click applies it); None withdraws it."""
        if label is not None:
            self.apply_answer.setText(f"Label the box “{label}”")
        self.apply_answer.setVisible(label is not None)

    def _task_changed(self) -> None:
        self.query.setPlaceholderText(PLACEHOLDERS[self.current_task()])

    def _threshold_moved(self, value: int) -> None:
        self.threshold_value.setText(f"{value / 100:.2f}")
        self.threshold_changed.emit(value / 100.0)
