"""Instruction text for every MiniGPT-v2 task identifier (as the official demo_v2.py and eval scripts write it).

This module produces the *instruction* only (e.g. ``[refer] give me the location of the red car``). Wrapping it in
``[INST] <Img>…</Img> … [/INST]`` and tokenising is `model.processing`'s job.
"""

from __future__ import annotations

import re

from .annotations import Task
from .errors import PromptError
from .grammar import Grid, format_box

# One default template per task. {query} is the user's text, {box} a grid box in the official syntax.
# refer/vqa/caption use the official benchmark-eval wording, grounding/identify the official demo wording.
DEFAULT_TEMPLATES: dict[Task, str] = {
    Task.detection: "[detection] {query}",
    Task.refer: "[refer] give me the location of {query}",
    Task.grounding: "[grounding] {query}",
    Task.identify: "[identify] what is this {box}",
    Task.vqa: "[vqa] {query}",
    Task.caption: "[caption] {query}",
    Task.chat: "{query}",
}

# Used when the user gives no query for a task that can run without one.
DEFAULT_QUERIES: dict[Task, str] = {
    Task.grounding: "describe this image in detail",
    Task.caption: "please describe this image?",
}

# The stage-3 training pools (official minigpt4/datasets/datasets/*.py), for fine-tuning targets.
REFER_TRAINING_TEMPLATES: tuple[str, ...] = (
    "[refer] {}",
    "[refer] give me the location of {}",
    "[refer] where is {} ?",
    "[refer] from this image, tell me the location of {}",
    "[refer] the location of {} is",
    "[refer] could you tell me the location for {} ?",
    "[refer] where can I locate the {} ?",
)
IDENTIFY_TRAINING_TEMPLATES: tuple[str, ...] = (
    "[identify] {}",
    "[identify] what object is in this location {}",
    "[identify] identify the object present at this location {}",
    "[identify] what is it in {}",
    "[identify] describe this object in {}",
    "[identify] this {} is",
    "[identify] the object in {} is",
)
# Grounded captions (official flickr.py::GroundedDetailDataset).
GROUNDING_TRAINING_TEMPLATES: tuple[str, ...] = (
    "[grounding] please describe this image in details",
    "[grounding] describe this image as detailed as possible",
    "[grounding] summarize this image in details",
    "[grounding] give a thorough description of what you see in this image",
)

_IDENTIFIER = re.compile(r"^\s*\[(" + "|".join(t.value for t in Task if t is not Task.chat) + r")\]\s*", re.I)


def split_identifier(text: str) -> tuple[Task, str]:
    """``"[refer] the dog"`` → (Task.refer, "the dog"); text without an identifier is chat."""
    match = _IDENTIFIER.match(text)
    if match is None:
        return Task.chat, text.strip()
    return Task(match.group(1).lower()), text[match.end() :].strip()


def build_instruction(task: Task | str, query: str | None = None, box: Grid | None = None) -> str:
    """The instruction for one request, e.g. ``[detection] red balloon``.

    A query that already starts with the same task identifier is accepted as is (users paste official prompts, e.g.
    ``[refer] where is the dog ?`` from the training templates), only normalised to ``[task] text``; it is not
    wrapped in the default template again.
    """
    task = Task(task)
    query = (query or "").strip()
    typed_task, rest = split_identifier(query)
    pasted = typed_task is task and task is not Task.chat
    if pasted:
        query = rest
    elif typed_task is not Task.chat:
        raise PromptError(
            f"the query starts with [{typed_task.value}] but the task is {task.value}; "
            f"drop the identifier from the query or choose task {typed_task.value}"
        )
    if task is Task.identify:
        if box is None:
            raise PromptError("task identify needs a box: pass --box x0,y0,x1,y1 in image pixels")
        if query:
            return f"[identify] {query} {format_box(box)}"
        return DEFAULT_TEMPLATES[task].format(box=format_box(box))
    if box is not None:
        raise PromptError(f"only task identify takes a box, not {task.value}")
    if pasted and query:
        return f"[{task.value}] {query}"
    if not query:
        query = DEFAULT_QUERIES.get(task, "")
    if not query:
        raise PromptError(f"task {task.value} needs a query, e.g. --query 'red balloon'")
    return DEFAULT_TEMPLATES[task].format(query=query)
