"""Which model requests a Label Studio task needs: the batch rule, and the interactive rule for a typed prompt.

Batch (no context): `[detection] <prompt>` for every label of the RectangleLabels control.

Interactive, typed prompt (a TextArea submitted with Auto-Annotation on):
1. an explicit task identifier wins: `[detection] red circle`, `[refer] the circle on the left`;
2. a prompt that starts with "all", "every", "each" or "find all" asks for all instances: `[detection]` of the rest;
3. a prompt that is just a label's name (or its plural) asks for all instances of that label: `[detection]`;
4. anything else is a referring phrase for one object: `[refer] <prompt>`, one box.
The boxes get the label the prompt names (as a whole word, longest match), else the first label of the config.

Interactive, drawn rectangle (a `smart="true"` RectangleLabels region): `[identify]` on that box; the answer is
mapped to one of the configured labels and suggested for the same rectangle.

What the context carries is the client's: a typed prompt that is not Unicode text (a lone surrogate) or a drawn
rectangle whose geometry is not finite numbers fails validation here, which the server answers with a 400 naming the
field, instead of failing inside the model or the geometry (a 500).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field
from pydantic.dataclasses import dataclass

from label_studio_access.label_config import LabelSpec, ProjectLabels
from model.annotations import Task
from model.regions import value_to_box
from model.request import Prompt

_EXPLICIT = re.compile(r"^\s*\[(detection|refer)\]\s*(.*)$", re.IGNORECASE | re.DOTALL)
_ALL = re.compile(r"^\s*(?:find\s+all|all(?:\s+the)?|every|each)\s+(.+)$", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class Query(Prompt):
    """A model prompt (:class:`model.request.Prompt`; ``box``: the user's rectangle for [identify]) and what the
    backend does with the answer."""

    label: LabelSpec | None = None  # the label the resulting boxes get; None for [identify] (the answer decides)
    region: dict | None = None  # [identify]: the user's region, echoed back with the suggested label


def batch_queries(labels: ProjectLabels) -> list[Query]:
    return [Query(Task.detection, query=spec.prompt, label=spec) for spec in labels.labels]


def typed_prompt(context: dict | None, labels: ProjectLabels) -> str | None:
    """The last non-empty text of a TextArea result in the interactive context."""
    texts = [
        text.strip()
        for item in _context_items(context)
        if item.get("type") == "textarea"
        and (labels.prompt_name is None or item.get("from_name") == labels.prompt_name)
        for text in (item.get("value") or {}).get("text") or []
        if isinstance(text, str) and text.strip()
    ]
    return texts[-1] if texts else None


def drawn_rectangle(context: dict | None, labels: ProjectLabels) -> dict | None:
    """The last rectangle the user drew on our image, if the context carries one."""
    rectangles = [
        item
        for item in _context_items(context)
        if item.get("type") in ("rectanglelabels", "rectangle") and item.get("to_name") in (None, labels.to_name)
    ]
    return rectangles[-1] if rectangles else None


def prompt_query(prompt: str, labels: ProjectLabels) -> Query:
    """The interactive rule for a typed prompt (see the module docstring)."""
    explicit = _EXPLICIT.match(prompt)
    if explicit:
        task, text = Task(explicit.group(1).lower()), explicit.group(2).strip()
        return Query(task, query=text, label=labels.find(text) or labels.labels[0])
    every = _ALL.match(prompt)
    if every:
        text = every.group(1).strip()
        exact = labels.find_exact(text)
        if exact is not None:
            return Query(Task.detection, query=exact.prompt, label=exact)
        return Query(Task.detection, query=text, label=labels.find(text) or labels.labels[0])
    exact = labels.find_exact(prompt)
    if exact is not None:
        return Query(Task.detection, query=exact.prompt, label=exact)
    return Query(Task.refer, query=prompt.strip(), label=labels.find(prompt) or labels.labels[0])


# Percent of the image. Far beyond any rectangle Label Studio draws, yet small enough that the pixel arithmetic of
# value_to_box stays finite for every image size; rotation in degrees, any finite angle.
_Percent = Annotated[float, Field(ge=-1e6, le=1e6)]


class _RectangleValue(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    x: _Percent
    y: _Percent
    width: _Percent
    height: _Percent
    rotation: float | None = None


class _DrawnRectangle(BaseModel):
    model_config = ConfigDict(extra="allow")

    value: _RectangleValue


def identify_query(region: dict, labels: ProjectLabels, width: int, height: int) -> Query | None:
    """[identify] on the user's rectangle; None when it has no area in the image. ValidationError (a 400) when its
    geometry is not numbers: `Infinity` or a rotation of "abc" is the client's mistake, not a server error."""
    _DrawnRectangle.model_validate(region)
    box = value_to_box(region["value"], width, height)
    if box is None:
        return None
    return Query(Task.identify, box=box, region=region)


def _context_items(context: dict | None) -> list[dict]:
    if not isinstance(context, dict):
        return []
    return [item for item in context.get("result") or [] if isinstance(item, dict)]
