"""MiniGPT-v2 box text <-> boxes.

The model writes a box as ``{<x0><y0><x1><y1>}``: integers 0..100, each axis normalised by the original
image's width or height. Boxes for one phrase are joined by ``<delim>``; a phrase is tagged ``<p>phrase</p>``
and followed by one space and its boxes::

    <p>sofas</p> {<57><49><70><72>}<delim>{<26><48><43><71>}

:func:`parse_boxes` is the robust parser: it never raises on model output, runs in linear time,
keeps every well-formed box and reports what it skipped and why. :func:`format_box`, :func:`format_boxes` and
:func:`format_phrase` are its exact inverse on the grid. :func:`official_demo_extract` and
:func:`official_refer_box` reproduce the official demo and RefCOCO-eval parsers (demo_v2.py and
eval_scripts/eval_ref.py in the official MiniGPT-4 repository) for parity
tests.
"""

from __future__ import annotations

import html
import math
import operator
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from model.annotations import Box

__all__ = [
    "GRID",
    "REASON_CLOSE",
    "REASON_DEGENERATE",
    "REASON_DIGITS",
    "REASON_NEGATIVE",
    "REASON_OPEN",
    "REASON_TEXT",
    "REASON_UNFINISHED",
    "Grid",
    "ParseResult",
    "ParsedBox",
    "Skipped",
    "format_box",
    "format_boxes",
    "format_phrase",
    "grid_to_pixels",
    "official_demo_extract",
    "official_refer_box",
    "parse_boxes",
    "pixels_to_grid",
    "strip_boxes",
]

GRID = 100
"""Coordinates run over 0..GRID inclusive (the demo's ``bounding_box_size``, the eval's ``--res``)."""

Grid = tuple[int, int, int, int]
"""x0, y0, x1, y1 on the 0..100 grid."""

DELIM = "<delim>"

# Reasons reported in Skipped.reason; kept as constants so callers and tests can compare them.
REASON_UNFINISHED = "unfinished box"
REASON_DEGENERATE = "degenerate box"
REASON_TEXT = "unexpected text inside box"
REASON_NEGATIVE = "negative coordinate"
REASON_DIGITS = "coordinate with more than 3 digits"
REASON_OPEN = "unmatched '{'"
REASON_CLOSE = "unmatched '}'"


class ParsedBox(BaseModel):
    """One well-formed box found in model output."""

    model_config = ConfigDict(frozen=True)

    phrase: str | None
    """Text of the ``<p>phrase</p>`` this box belongs to, stripped; None for a bare box."""
    grid: Grid
    """Corners ordered (x0 < x1, y0 < y1) and clamped to 0..100."""
    box: Box
    """Pixels of the original (upright) image."""
    span: tuple[int, int]
    """[start, end) of the ``{...}`` in :attr:`ParseResult.text`."""
    group: int = 0
    """Index of the phrase/box group: boxes joined by ``<delim>`` (and their phrase) share it."""


class Skipped(BaseModel):
    """A piece of model output that looked like (part of) a box but was not used."""

    model_config = ConfigDict(frozen=True)

    span: tuple[int, int]
    text: str
    reason: str


class ParseResult(BaseModel):
    """Everything :func:`parse_boxes` found, in text order.

    All spans index :attr:`text`, which is exactly the string that was passed in. HTML entities (``&lt;`` …)
    are unescaped internally, like the official demo does, and spans are mapped back onto the escaped original.
    """

    model_config = ConfigDict(frozen=True)

    boxes: list[ParsedBox]
    skipped: list[Skipped]
    text: str = ""

    @property
    def phrases(self) -> list[str]:
        """Distinct phrases that own at least one box, in order of first appearance."""
        return list(dict.fromkeys(b.phrase for b in self.boxes if b.phrase is not None))

    @property
    def groups(self) -> list[tuple[str | None, list[ParsedBox]]]:
        """Ordered (phrase or None, boxes) per phrase/box group."""
        out: list[tuple[str | None, list[ParsedBox]]] = []
        last: int | None = None
        for b in self.boxes:
            if b.group != last:
                out.append((b.phrase, []))
                last = b.group
            out[-1][1].append(b)
        return out


# ----------------------------------------------------------------------------------------------------
# Pixel mapping


def _check_size(width: int, height: int) -> None:
    if not (width > 0 and height > 0):
        raise ValueError(f"image size must be positive, got {width}x{height}")


def grid_to_pixels(grid: Grid, width: int, height: int, *, offset: float = 0.0) -> Box:
    """Grid corners to pixels of the original image: x = (c + offset) / 100 * W, clamped to [0, W].

    offset 0 is the official mapping (demo and RefCOCO eval); 0.5 is the unbiased centre of the truncation cell
    [c, c + 1), since training targets were truncated, int(v / W * 100).
    Raises ValueError for a degenerate grid, a bad size or an offset outside [0, 1).
    """
    _check_size(width, height)
    if not (0.0 <= offset < 1.0):
        raise ValueError(f"offset must be in [0, 1), got {offset}")
    x0, y0, x1, y1 = grid

    # Same operation order as the official c / 100 * W, so offset 0 gives bit-identical pixels.
    def px(c: int, dim: int) -> float:
        return min(max((c + offset) / GRID * dim, 0.0), float(dim))

    return Box(x0=px(x0, width), y0=px(y0, height), x1=px(x1, width), y1=px(y1, height))


# Float noise: 57 / 100 * W / W * 100 can come out as 56.999999999999993. Without a tolerance, truncation
# would move such a box one cell; 1e-9 of a cell is far below any real annotation's precision.
_TRUNC_EPS = 1e-9


def pixels_to_grid(box: Box | tuple[float, float, float, float], width: int, height: int) -> Grid:
    """Pixels to the grid with the official training quantisation int(v / dim * 100), clamped to 0..100.

    The only departure from the official formula: values within 1e-9 of the next integer snap up, so that
    pixels made by :func:`grid_to_pixels` come back to the same grid. Corners are not reordered; a box smaller
    than one cell may give x0 == x1.
    """
    _check_size(width, height)
    xyxy = box.xyxy if isinstance(box, Box) else tuple(box)
    if len(xyxy) != 4:
        raise ValueError(f"expected 4 coordinates, got {len(xyxy)}")
    dims = (width, height, width, height)
    out = [min(max(math.floor(v / d * GRID + _TRUNC_EPS), 0), GRID) for v, d in zip(xyxy, dims, strict=True)]
    return (out[0], out[1], out[2], out[3])


# ----------------------------------------------------------------------------------------------------
# Formatting


def _check_grid(grid: Grid) -> Grid:
    if len(grid) != 4:
        raise ValueError(f"a grid box has 4 coordinates, got {len(grid)}")
    try:
        vals = tuple(operator.index(v) for v in grid)  # accepts numpy ints, rejects floats
    except TypeError as e:
        raise ValueError(f"grid coordinates must be integers, got {tuple(grid)}") from e
    if any(not 0 <= v <= GRID for v in vals):
        raise ValueError(f"grid coordinates must be in 0..{GRID}, got {vals}")
    return (vals[0], vals[1], vals[2], vals[3])


def format_box(grid: Grid) -> str:
    """``{<x0><y0><x1><y1>}``, exactly as the model writes it. Raises ValueError outside 0..100."""
    x0, y0, x1, y1 = _check_grid(grid)
    return f"{{<{x0}><{y0}><{x1}><{y1}>}}"


def format_boxes(grids: Sequence[Grid]) -> str:
    """Boxes joined by ``<delim>`` with no spaces; empty string for no boxes."""
    return DELIM.join(format_box(g) for g in grids)


_PHRASE_FORBIDDEN = re.compile(r"[{}]|<\s*/?\s*p\s*>|<\s*delim\s*>")


def format_phrase(phrase: str, grids: Sequence[Grid]) -> str:
    """``<p>phrase</p> {…}<delim>{…}``: one space after ``</p>``, as in training.

    The phrase is stripped. Raises ValueError for a blank phrase, no boxes, or a phrase that contains braces
    or tags (it could not be parsed back).
    """
    phrase = phrase.strip()
    if not phrase:
        raise ValueError("phrase must not be blank")
    if _PHRASE_FORBIDDEN.search(phrase):
        raise ValueError(f"phrase must not contain braces, <p>, </p> or <delim>: {phrase!r}")
    if not grids:
        raise ValueError("a phrase needs at least one box")
    return f"<p>{phrase}</p> {format_boxes(grids)}"


# ----------------------------------------------------------------------------------------------------
# HTML unescaping with a position map


# The pattern html.unescape uses. Unescaping each match on its own gives the same text as unescaping the whole
# string, and lets us remember where every output character came from.
_CHARREF = re.compile(r"&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)")


class _Unescaped:
    """Unescaped text plus a map from its character positions back to the original string."""

    def __init__(self, original: str) -> None:
        self.original = original
        self.starts: list[int] | None = None
        self.ends: list[int] | None = None
        if "&" not in original:
            self.text = original
            return
        pieces: list[str] = []
        starts: list[int] = []
        ends: list[int] = []
        pos = 0
        for m in _CHARREF.finditer(original):
            a, b = m.span()
            pieces.append(original[pos:a])
            starts.extend(range(pos, a))
            ends.extend(range(pos + 1, a + 1))
            raw = m.group()
            rep = html.unescape(raw)
            # Characters the entity did not consume ("&lt{" -> "<{") keep their own positions; the rest all
            # point at the entity as a whole.
            k = 0
            while k < min(len(raw), len(rep)) and raw[-1 - k] == rep[-1 - k]:
                k += 1
            head = len(rep) - k
            starts.extend([a] * head)
            ends.extend([b - k] * head)
            starts.extend(range(b - k, b))
            ends.extend(range(b - k + 1, b + 1))
            pieces.append(rep)
            pos = b
        pieces.append(original[pos:])
        starts.extend(range(pos, len(original)))
        ends.extend(range(pos + 1, len(original) + 1))
        self.text = "".join(pieces)
        self.starts, self.ends = starts, ends

    def span(self, start: int, end: int) -> tuple[int, int]:
        """Map a non-empty [start, end) of :attr:`text` onto :attr:`original`."""
        if self.starts is None or self.ends is None:
            return (start, end)
        return (self.starts[start], self.ends[end - 1])


# ----------------------------------------------------------------------------------------------------
# Robust parser

# One pass over the text. Every alternative is anchored on a literal and cannot run past the next brace (or
# the end of a whitespace run), so the scan is linear even on adversarial junk.
_TOKEN = re.compile(
    r"(?P<popen><\s*p\s*>)"
    r"|(?P<pclose><\s*/\s*p\s*>)"
    r"|(?P<delim><\s*delim\s*>)"
    r"|(?P<box>\{[^{}]*\})"
    r"|(?P<unfinished>\{[^{}]*\Z)"  # an opening brace with no brace after it: output cut off mid-box
    r"|(?P<lbrace>\{)"
    r"|(?P<rbrace>\})"
)
_COORD = re.compile(r"<\s*(-?[0-9]+)\s*>")
_BOXLIKE = re.compile(r"[\s<>0-9-]*")  # what strip_boxes treats as box content


def _read_box(content: str) -> Grid | str:
    """The ordered, clamped grid inside ``{…}``, or the reason it is not a box."""
    nums = _COORD.findall(content)
    if _COORD.sub("", content).strip():
        return REASON_TEXT
    if len(nums) != 4:
        return f"expected 4 coordinates, got {len(nums)}"
    if any(n.startswith("-") for n in nums):
        return REASON_NEGATIVE
    if any(len(n) > 3 for n in nums):
        return REASON_DIGITS
    x0, y0, x1, y1 = (min(int(n), GRID) for n in nums)
    x0, x1 = min(x0, x1), max(x0, x1)
    y0, y1 = min(y0, y1), max(y0, y1)
    if x0 == x1 or y0 == y1:
        return REASON_DEGENERATE
    return (x0, y0, x1, y1)


def parse_boxes(text: str, width: int, height: int, *, offset: float = 0.0) -> ParseResult:
    """Every box in model output, with its phrase, grid, pixels and span; never raises on any ``text``.

    - A box is ``{<a><b><c><d>}``; whitespace around and inside the tokens is accepted. Each coordinate has
      1-3 digits; values above 100 clamp to 100; corners are ordered. Boxes with a negative number, other text
      inside, not exactly 4 numbers, or zero width or height on the grid are skipped with a reason, as are an
      unfinished trailing box and unmatched braces.
    - ``<p>phrase</p>`` followed by optional whitespace and boxes joined by ``<delim>`` gives that (stripped)
      phrase to each of those boxes. Any other box is bare (phrase None). A phrase with no box after it, or a
      blank phrase, gives nothing; a phrase whose text contains ``{`` is abandoned.
    - Pixels use x = (c + offset) / 100 * width, y likewise with height (see :func:`grid_to_pixels`).

    Spans index ``ParseResult.text``, which is ``text`` itself even when it contains HTML entities.
    ValueError is raised only for a bad image size or offset, never because of the text.
    """
    _check_size(width, height)
    if not (0.0 <= offset < 1.0):
        raise ValueError(f"offset must be in [0, 1), got {offset}")
    if not isinstance(text, str):
        text = str(text)
    u = _Unescaped(text)
    work = u.text

    found_boxes: list[tuple[str | None, Grid, Box, tuple[int, int], int]] = []
    skips: list[list[Any]] = []  # [start, end, reason]; models are built at the end

    def skip(start: int, end: int, reason: str) -> None:
        a, b = u.span(start, end)
        if reason in (REASON_OPEN, REASON_CLOSE) and skips and skips[-1][1] == a and skips[-1][2] == reason:
            skips[-1][1] = b  # one entry for a run like "}}}}": junk must not cost a model per character
        else:
            skips.append([a, b, reason])

    phrase_start: int | None = None  # position after an open <p>, while waiting for </p>
    group_phrase: str | None = None
    group = -1
    # "free": a box starts a bare group; "phrase": after </p>; "box": after a box; "delim": after box<delim>
    state = "free"
    last_end = 0

    for m in _TOKEN.finditer(work):
        start, end = m.span()
        kind = m.lastgroup
        if phrase_start is None and work[last_end:start].strip():
            state = "free"  # text between a phrase/box and the next token breaks the group
        last_end = end

        if kind == "popen":
            phrase_start, state = end, "free"  # a later <p> restarts the phrase
        elif kind == "pclose":
            if phrase_start is not None:
                phrase = work[phrase_start:start].strip()
                phrase_start = None
                group_phrase, state = (phrase, "phrase") if phrase else (None, "free")
            else:
                state = "free"
        elif kind == "delim":
            if phrase_start is None:
                state = "delim" if state == "box" else "free"
        elif kind in ("box", "unfinished", "lbrace"):
            if phrase_start is not None:
                phrase_start = None  # a phrase does not contain boxes: drop it, read the box as bare
                state = "free"
            if state != "delim":  # only <delim> continues a group
                group += 1
                if state != "phrase":
                    group_phrase = None
            state = "box"
            if kind == "unfinished":
                skip(start, end, REASON_UNFINISHED)
            elif kind == "lbrace":
                skip(start, end, REASON_OPEN)
                state = "free"
            else:
                found = _read_box(work[start + 1 : end - 1])
                if isinstance(found, str):
                    skip(start, end, found)
                    continue
                try:
                    px = grid_to_pixels(found, width, height, offset=offset)
                except ValueError:  # only for absurd sizes where floats collapse; keep the no-raise promise
                    skip(start, end, REASON_DEGENERATE)
                    continue
                found_boxes.append((group_phrase, found, px, u.span(start, end), group))
        else:  # rbrace
            if phrase_start is None:
                state = "free"
            skip(start, end, REASON_CLOSE)

    # Number groups densely (groups with only skipped boxes leave gaps otherwise).
    dense = {g: i for i, g in enumerate(dict.fromkeys(f[4] for f in found_boxes))}
    boxes = [ParsedBox(phrase=ph, grid=g, box=px, span=sp, group=dense[k]) for ph, g, px, sp, k in found_boxes]
    skipped = [Skipped(span=(a, b), text=text[a:b], reason=r) for a, b, r in skips]
    return ParseResult(boxes=boxes, skipped=skipped, text=text)


_HSPACE = re.compile(r"[^\S\n]+")
_SPACE_BEFORE_PUNCT = re.compile(r" +([,.;:!?])")
_SPACE_AROUND_NEWLINE = re.compile(r" *\n *")


def strip_boxes(text: str) -> str:
    """Readable text: boxes, ``<delim>`` and ``<p>``/``</p>`` tags removed, entities unescaped, spaces tidied.

    Brace groups whose content is only ``<``, ``>``, digits, ``-`` and whitespace (boxes, malformed ones too)
    are removed; other braces are kept. Never raises.
    """
    if not isinstance(text, str):
        text = str(text)
    work = html.unescape(text) if "&" in text else text
    pieces: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(work):
        kind = m.lastgroup
        drop = kind in ("popen", "pclose", "delim") or (
            kind in ("box", "unfinished") and _BOXLIKE.fullmatch(m.group().strip("{}")) is not None
        )
        if drop:
            pieces.append(work[pos : m.start()])
            pieces.append(" ")  # keeps words on either side apart; squeezed below
            pos = m.end()
    pieces.append(work[pos:])
    out = _HSPACE.sub(" ", "".join(pieces))
    out = _SPACE_AROUND_NEWLINE.sub("\n", out)
    out = _SPACE_BEFORE_PUNCT.sub(r"\1", out)
    return out.strip()


# ----------------------------------------------------------------------------------------------------
# Official-compatible parsers (for parity tests): the behaviour of demo_v2.py and eval_scripts/eval_ref.py, rewritten

_OFFICIAL_MATCH = re.compile(r"<p>.*?\}(?!<)")  # lazily to the first '}' not followed by '<'
_OFFICIAL_INT = re.compile(r"-?\d+")
_OFFICIAL_REFER = re.compile(r"\{<\d{1,3}><\d{1,3}><\d{1,3}><\d{1,3}>\}")


def _official_ints(piece: str) -> tuple[int, int, int, int] | None:
    nums = [int(n) for n in _OFFICIAL_INT.findall(piece)]
    return (nums[0], nums[1], nums[2], nums[3]) if len(nums) == 4 else None


def official_demo_extract(text: str) -> list[tuple[str | None, list[tuple[int, int, int, int]]]]:
    """The official demo's parse (demo_v2.py `extract_substrings`): [(phrase or None, [grid boxes])], unclamped.

    Phrases are the raw text between ``<p>`` and ``</p>`` (not stripped); a match whose ``</p>`` split does
    not give exactly two parts is skipped; a matched phrase with no 4-integer piece is kept with an empty list.
    Like a plain Python regex, ``.`` does not cross newlines. Worst case quadratic, like the original (many
    ``<p>`` and no closing ``}`` on a long line); use it for parity tests, not on untrusted junk.
    """
    text = html.unescape(text)
    last = text.rfind("}")
    if last >= 0:
        text = text[: last + 1]  # drops an unfinished trailing box
    matches = _OFFICIAL_MATCH.findall(text)
    if not matches:
        box = _official_ints(text)  # "refer" mode: exactly 4 integers in the whole text
        return [(None, [box])] if box is not None else []
    out: list[tuple[str | None, list[tuple[int, int, int, int]]]] = []
    for match in matches:
        parts = match.split("</p>")
        if len(parts) != 2:
            continue
        phrase = parts[0][len("<p>") :]
        grids = [g for g in map(_official_ints, parts[1].split(DELIM)) if g is not None]
        out.append((phrase, grids))
    return out


def official_refer_box(text: str) -> tuple[int, int, int, int] | None:
    """The RefCOCO eval's parse (eval_scripts/eval_ref.py), unclamped and unordered.

    None unless the answer, with ``<unk>`` and spaces removed, starts with a ``{<d><d><d><d>}`` box (1-3 digits
    each); else the first four integer runs of the answer.
    """
    answer = text.replace("<unk>", "").replace(" ", "")
    if not _OFFICIAL_REFER.match(answer):
        return None
    nums = re.findall(r"\d+", answer)
    return (int(nums[0]), int(nums[1]), int(nums[2]), int(nums[3]))
