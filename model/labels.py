"""Labels and the words that name them, one rule for every surface (desktop app, Label Studio backend, batch tools).

Which label a typed prompt or a model answer names:

* case does not matter, and ``_`` and ``-`` read as spaces: "Traffic_Light" and "traffic-light" name "traffic light";
* English plurals name their singular and back, on the last word: box/boxes, city/cities, car/cars, traffic lights;
* a name counts only as whole words: "lightning" does not name "light";
* when several labels are named, the longest name wins: "the traffic light" is "traffic light", not "light";
  on a tie the label listed first wins.

A label is named by its name and by the other texts the caller gives for it (its model prompt, Label Studio's
``predicted_values``). What the model is asked for a label is :func:`label_prompt`.

Torch-free, so the desktop app and the backend use it without loading the model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["LabelMatcher", "LabelSpec", "label_prompt", "label_spec", "name_forms", "normalise"]

T = TypeVar("T")

_SEPARATORS = re.compile(r"[_\-\s]+")
_SIBILANT_ENDINGS = ("s", "x", "z", "ch", "sh")  # box → boxes, not boxs
_VOWELS = frozenset("aeiou")


def normalise(text: str) -> str:
    """Lower case (casefold), ``_`` and ``-`` as spaces, runs of spaces as one, no leading or trailing space."""
    return _SEPARATORS.sub(" ", text.casefold()).strip()


def _plurals(word: str) -> set[str]:
    if word.endswith(_SIBILANT_ENDINGS):
        return {word + "es"}
    if len(word) > 1 and word.endswith("y") and word[-2] not in _VOWELS:
        return {word[:-1] + "ies"}
    if word.endswith("o"):
        return {word + "s", word + "es"}  # photos, tomatoes
    return {word + "s"}


def _singulars(word: str) -> set[str]:
    # Generous on purpose: a stray form ("len" from "lens") only matters if a prompt contains that exact word.
    found = set()
    if len(word) > 4 and word.endswith("ies"):
        found.add(word[:-3] + "y")  # cities → city
    if word.endswith("es") and word[:-2].endswith((*_SIBILANT_ENDINGS, "o")):
        found.add(word[:-2])  # boxes → box, glasses → glass, tomatoes → tomato
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        found.add(word[:-1])  # cars → car, shoes → shoe
    return found


def name_forms(name: str) -> tuple[str, ...]:
    """The normalised name and its singular and plural forms (last word inflected); () for a blank name."""
    base = normalise(name)
    if not base:
        return ()
    head, _, last = base.rpartition(" ")
    words = sorted(_plurals(last) | _singulars(last))
    return (base, *(f"{head} {word}" if head else word for word in words if word != last))


@dataclass(frozen=True)
class _Form:
    text: str
    pattern: re.Pattern[str]


class LabelMatcher(Generic[T]):
    """Finds which of a set of labels a text names. ``T`` is what the caller gets back (a name, a config entry).

    Built from ``(label, names)`` pairs in priority order; each name is also matched in its other number.
    """

    def __init__(self, labels: Iterable[tuple[T, Sequence[str | None]]]) -> None:
        self._labels: list[tuple[T, tuple[_Form, ...]]] = []
        for label, names in labels:
            texts = dict.fromkeys(form for name in names if name for form in name_forms(name))
            forms = tuple(_Form(t, re.compile(rf"(?<!\w){re.escape(t)}(?!\w)")) for t in texts)
            self._labels.append((label, forms))

    def exact(self, text: str) -> T | None:
        """The label the whole text is a name of (any case, separator or number), else None."""
        wanted = normalise(text)
        if not wanted:
            return None
        return next((label for label, forms in self._labels if any(f.text == wanted for f in forms)), None)

    def find(self, text: str) -> T | None:
        """The label whose name occurs in the text as whole words, the longest name winning; else None.

        A text that is exactly a name finds that label: the whole text is the longest name it can contain.
        """
        wanted = normalise(text)
        best: tuple[int, T] | None = None
        for label, forms in self._labels:
            for form in forms:
                if (best is None or len(form.text) > best[0]) and form.pattern.search(wanted):
                    best = (len(form.text), label)
        return best[1] if best is not None else None


def label_prompt(name: str, *preferred: str | None) -> str:
    """What the model is asked for a label: the first non-blank of ``preferred`` (its own prompt, then e.g. Label
    Studio's ``predicted_values``), else its name.

    Asked in words: ``_`` reads as a space ("fire_hydrant" → "fire hydrant"), since the model was trained on
    natural language, and runs of whitespace become one space. Case and hyphens are kept ("T-shirt").
    """
    for text in (*preferred, name):
        words = " ".join((text or "").replace("_", " ").split())
        if words:
            return words
    return name


@dataclass(frozen=True)
class LabelSpec:
    """One label of a Label Studio ``<Label>`` (or a plain name): what is stored, what is asked, what names it."""

    value: str  # what Label Studio stores in `rectanglelabels` (the alias if the label has one)
    prompt: str  # what we ask the model for
    names: tuple[str, ...]  # the texts that name this label in a typed prompt or a model answer (LabelMatcher)


def label_spec(value: str, attrs: Mapping[str, str] | None = None) -> LabelSpec:
    """The label ``value`` given a Label Studio ``<Label>``'s attributes: prompted by its ``prompt`` attribute, else
    the first of its ``predicted_values`` (the label-studio-ml convention for model class names), else its shown
    ``value`` (see :func:`label_prompt`). Without attributes, a plain label name (``--labels car,person``)."""
    attrs = dict(attrs or {})
    shown = attrs.get("value", value)
    predicted = [v.strip() for v in attrs.get("predicted_values", "").split(",") if v.strip()]
    prompt = label_prompt(shown, attrs.get("prompt"), *predicted[:1])
    return LabelSpec(value=value, prompt=prompt, names=tuple(dict.fromkeys((value, shown, prompt, *predicted))))
