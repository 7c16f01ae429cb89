"""What one "run the model" asks for, Qt-free: the task and the typed query become model prompts, and each prompt
knows which label its boxes get.

* ``[detection]`` with an empty query asks for every label of the project (each label's prompt, else its name).
  A query may list several things, comma-separated: "cat, red balloon". A box gets the label the thing names,
  else the thing itself becomes a new label.
* ``[refer]`` and ``[grounding]`` need a query. A ``[refer]`` box gets the label its phrase names as a whole word
  (longest match, "the dog on the left" → dog), else the current label, else the phrase. ``[grounding]`` boxes
  take the phrases the model attaches.
* ``[identify]`` asks what is inside the selected box; ``[vqa]``, ``[caption]`` and chat answer with text.

Which label a text names, and what the model is asked for a label, are :mod:`model.labels`' rules, the ones the
Label Studio backend uses too (any case, ``_``/``-`` as spaces, plurals, whole words, the longest name wins).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic.dataclasses import dataclass

from model import request
from model.annotations import Box, Task
from model.errors import MiniGPTError
from model.labels import LabelMatcher, label_prompt

from .records import LabelRow


class RunError(MiniGPTError):
    """The run cannot be asked as typed; the message says what to change."""


@dataclass(frozen=True)
class Prompt(request.Prompt):
    """A model prompt (:class:`model.request.Prompt`) and the label its boxes get."""

    label: str | None = None  # None: the proposal's own label (phrase or query)


def plan_run(
    task: Task,
    query: str,
    labels: Sequence[LabelRow],
    *,
    current_label: str | None = None,
    selected_box: Box | None = None,
) -> list[Prompt]:
    query = " ".join(query.split())
    if task is Task.detection:
        return detection_prompts(labels, query)
    if task is Task.refer:
        if not query:
            raise RunError("[refer] needs a description of one object, e.g. 'the dog on the left'")
        return [Prompt(task, query, label=label_named(query, labels) or current_label or query)]
    if task is Task.grounding:
        return [Prompt(task, query or "describe this image in detail")]
    if task is Task.identify:
        if selected_box is None:
            raise RunError("[identify] needs a box: select one box on the image first")
        return [Prompt(task, query or "what is this?", box=selected_box)]
    if task in (Task.vqa, Task.chat) and not query:
        raise RunError(f"{task.identifier or 'chat'} needs a question")
    return [Prompt(task, query or None)]


def detection_prompts(labels: Sequence[LabelRow], query: str = "") -> list[Prompt]:
    """``[detection]`` prompts for a comma-separated query, or for every label when the query is empty."""
    if not query:
        if not labels:
            raise RunError("type what to detect (e.g. 'circle'), or add labels to detect them all")
        return [Prompt(Task.detection, label_prompt(label.name, label.prompt), label=label.name) for label in labels]
    things = [part.strip() for part in query.split(",") if part.strip()]
    matcher = _matcher(labels)  # built once: it compiles a pattern for every form of every label
    return [Prompt(Task.detection, thing, label=matcher.exact(thing) or thing) for thing in things]


def _matcher(labels: Sequence[LabelRow]) -> LabelMatcher[str]:
    return LabelMatcher((label.name, (label.name, label.prompt)) for label in labels)


def exact_label(text: str, labels: Sequence[LabelRow]) -> str | None:
    """The label ``text`` is a name or prompt of, in any case, separator or number, if any."""
    return _matcher(labels).exact(text)


def label_named(phrase: str, labels: Sequence[LabelRow]) -> str | None:
    """The label whose name or prompt occurs in ``phrase`` as whole words; the longest name wins."""
    return _matcher(labels).find(phrase)


def label_from_answer(answer: str, labels: Sequence[LabelRow]) -> str | None:
    """The label an ``[identify]`` answer names: a project label it names, else the answer itself when it is a
    short name (at most three words), else None. Only ever a suggestion: the person applies it."""
    text = " ".join(answer.replace("</s>", " ").split()).strip(" .,;:!?\"'")
    if not text:
        return None
    named = label_named(text, labels)
    if named is not None:
        return named
    return text if len(text.split()) <= 3 else None
