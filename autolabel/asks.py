"""What the model is asked about each image: ``[detection] <prompt>`` per label, or ``[refer] <phrase>`` per phrase.

Labels come from ``--labels "car,person"``, a Label Studio label config (``--label-config``), or the source (a COCO
file's categories, a manifest line's labels). Each label is prompted by :func:`model.labels.label_spec`, the rule the
backend and the desktop app use: a ``<Label>``'s ``prompt``, else its first ``predicted_values``, else its name.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from model.annotations import Task
from model.errors import MiniGPTError
from model.labels import LabelSpec, label_spec
from model.request import Prompt

from .sources import Item, Source

__all__ = ["Asks", "AsksError", "LabeledPrompt", "asks_for", "config_labels", "label_config_labels", "parse_labels"]


class AsksError(MiniGPTError):
    """What to ask the model cannot be worked out from the arguments and the source."""


@dataclass(frozen=True)
class LabeledPrompt:
    prompt: Prompt
    label: str  # the label its boxes get: the label's value, or the phrase itself


@dataclass(frozen=True)
class LabelConfigNames:
    """The parts of a Label Studio config that the import file needs besides its labels."""

    from_name: str = "label"
    to_name: str = "image"
    image_key: str = "image"


@dataclass(frozen=True)
class Asks:
    task: Task
    labels: tuple[LabelSpec, ...]  # the run's labels ([detection]); () for [refer]
    names: LabelConfigNames = LabelConfigNames()

    def prompts(self, item: Item) -> list[LabeledPrompt]:
        """The prompts for one image, in a fixed order (the journal and both engines rely on it)."""
        if self.task is Task.refer:
            return [LabeledPrompt(Prompt(Task.refer, phrase), phrase) for phrase in item.phrases or ()]
        specs = self.labels if item.labels is None else tuple(label_spec(name) for name in item.labels)
        return [LabeledPrompt(Prompt(Task.detection, spec.prompt), spec.value) for spec in specs]

    def identity(self) -> dict[str, object]:
        """What the journal records of the asks, to refuse a resume that would ask differently."""
        return {"task": self.task.value, "labels": [[spec.value, spec.prompt] for spec in self.labels]}


def parse_labels(text: str) -> tuple[LabelSpec, ...]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise AsksError(f"--labels {text!r} names no label; pass e.g. --labels 'car,person'")
    return tuple(label_spec(name) for name in dict.fromkeys(names))


def label_config_labels(path: str | os.PathLike[str]) -> tuple[tuple[LabelSpec, ...], LabelConfigNames]:
    """The labels of a Label Studio label config file, read as the backend reads a project's."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AsksError(f"cannot read the label config {path}: {err}; pass a readable XML file") from err
    return config_labels(text, where=f"the label config {path}")


def config_labels(text: str, *, where: str = "the label config") -> tuple[tuple[LabelSpec, ...], LabelConfigNames]:
    """The labels of a label config's RectangleLabels on an Image, and the names the import file needs: the
    backend's parse (:class:`label_studio_access.label_config.ProjectLabels`), so both read a config alike."""
    try:
        from label_studio_access.label_config import LabelConfigError, ProjectLabels
    except ImportError as err:  # label-studio-sdk is in the backend extra
        from model.commands import missing_extra

        raise missing_extra("--label-config", "backend", err) from err
    try:
        parsed = ProjectLabels.parse(text)
    except LabelConfigError as err:
        raise AsksError(f"{where}: {err}") from err
    return parsed.labels, LabelConfigNames(parsed.from_name, parsed.to_name, parsed.value_key)


def asks_for(
    source: Source,
    *,
    task: str,
    labels: tuple[LabelSpec, ...] | None,
    names: LabelConfigNames | None = None,
) -> Asks:
    """The asks of a run: the given labels, else the source's; phrases for [refer]."""
    names = names or LabelConfigNames(image_key=source.image_key)
    if task == Task.refer.value:
        missing = next((item for item in source.items if not item.phrases), None)
        if missing is not None:
            raise AsksError(
                f"--task refer needs phrases for every image, and {missing.key} has none; use a JSONL manifest with "
                '{"image": ..., "phrases": [...]} lines'
            )
        return Asks(Task.refer, (), names)
    if labels is None and source.labels:
        labels = tuple(label_spec(name) for name in source.labels)
    if labels is None and all(item.labels for item in source.items):
        labels = tuple(label_spec(n) for n in dict.fromkeys(n for item in source.items for n in item.labels or ()))
    if not labels:
        raise AsksError("no labels to look for; pass --labels 'car,person' or --label-config FILE")
    return Asks(Task.detection, labels, names)


def all_labels(asks: Asks, items: Sequence[Item]) -> list[str]:
    """Every label a box can get, in first-seen order: the COCO file's categories."""
    if asks.task is Task.refer:
        return list(dict.fromkeys(p for item in items for p in item.phrases or ()))
    extra = (name for item in items for name in item.labels or ())
    return list(dict.fromkeys([*(spec.value for spec in asks.labels), *(label_spec(n).value for n in extra)]))
