"""What the model is asked about one image, the one shape every surface shares: :class:`Prompt` (task, query, box).

The model's API (:class:`model.proposer.ProposeRequest`: an image and a prompt), the desktop app's planned runs and
engine requests, the Label Studio backend's queries and the ``/propose`` wire body (:mod:`model.propose_api`) all
carry this one type, or subclass it to add what their surface does with the answer (the label boxes get).

Torch-free (pydantic only), so the desktop app and a remote-only client build prompts without loading the model.
"""

from __future__ import annotations

from pydantic import ConfigDict, field_serializer, field_validator
from pydantic.dataclasses import dataclass

from .annotations import Box, Task

__all__ = ["Prompt", "check_text"]


def check_text(text: str) -> str:
    """``text`` if it is Unicode the tokenizer can take, else ValueError naming the character and the fix.

    A lone surrogate (JSON ``"\\ud800"``, or a command-line argument that was not UTF-8) is a Python string but not
    text: the tokenizer raised on it deep in a model call, a 500 from the server and a traceback from the CLI.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"not valid Unicode: it holds a lone surrogate {text[err.start]!r} at position {err.start}; "
            "encode the text as UTF-8"
        ) from None
    return text


@dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class Prompt:
    """One question about one image: ``Prompt(Task.refer, "the dog on the left")``, ``Prompt("identify", box=b)``.

    Validated when built: ``task`` may be given as its name ("detection"), ``box`` as ``[x0, y0, x1, y1]``. Whether
    the task takes the query and the box is checked where the instruction is built (:mod:`model.prompts`).
    """

    task: Task
    query: str | None = None
    box: Box | None = None  # pixels of the upright image; [identify] only

    @field_validator("query")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return check_text(value) if value is not None else None

    @field_validator("box", mode="before")
    @classmethod
    def _xyxy(cls, value: object) -> object:
        if isinstance(value, (list, tuple)):
            if len(value) != 4:
                raise ValueError(f"expected [x0, y0, x1, y1], got {len(value)} numbers")
            return dict(zip(("x0", "y0", "x1", "y1"), value, strict=True))
        return value

    @field_serializer("box", when_used="json")
    def _box_as_xyxy(self, box: Box | None) -> list[float] | None:
        # JSON carries a box as [x0, y0, x1, y1], the form the /propose contract documents and _xyxy reads back.
        return list(box.xyxy) if box is not None else None
