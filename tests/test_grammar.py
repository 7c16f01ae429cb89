"""Tests for model.grammar: the MiniGPT-v2 box grammar."""

from __future__ import annotations

import gc
import html
import itertools
import random
import string
import time
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.annotations import Box
from model.grammar import (
    GRID,
    REASON_CLOSE,
    REASON_DEGENERATE,
    REASON_DIGITS,
    REASON_NEGATIVE,
    REASON_OPEN,
    REASON_TEXT,
    REASON_UNFINISHED,
    Grid,
    ParseResult,
    _Unescaped,  # private, tested for the span mapping
    format_box,
    format_boxes,
    format_phrase,
    grid_to_pixels,
    official_demo_extract,
    official_refer_box,
    parse_boxes,
    pixels_to_grid,
    strip_boxes,
)

# ----------------------------------------------------------------------------------------------------
# Strategies


@st.composite
def grids(draw: st.DrawFn) -> Grid:
    x0, x1 = sorted(draw(st.lists(st.integers(0, GRID), min_size=2, max_size=2, unique=True)))
    y0, y1 = sorted(draw(st.lists(st.integers(0, GRID), min_size=2, max_size=2, unique=True)))
    return (x0, y0, x1, y1)


# Phrases as a model writes them: words, no tags or braces, no surrounding whitespace.
phrases = (
    st.text(alphabet=string.ascii_letters + string.digits + " ,'-", min_size=1, max_size=30).map(str.strip).filter(bool)
)
groups = st.lists(st.tuples(phrases, st.lists(grids(), min_size=1, max_size=4)), min_size=1, max_size=5)
# Text between phrase groups; it must not start with '<' (the official regex would run on) or be empty.
separators = st.sampled_from([" ", ", ", "\n", " and ", ". The ", " wearing "])
sizes = st.integers(1, 5000)

JUNK_PIECES = [*"{<}>0123456789", "<delim>", "<p>", "</p>", *"abcxyz", " ", "-"]


def check_invariants(text: str, result: ParseResult) -> None:
    """What every parse must satisfy, whatever the input."""
    assert isinstance(result, ParseResult)
    assert result.text == text
    spans = [b.span for b in result.boxes] + [s.span for s in result.skipped]
    for a, b in spans:
        assert 0 <= a < b <= len(text)
    ordered = sorted(spans)
    assert all(p[1] <= q[0] for p, q in itertools.pairwise(ordered)), "spans overlap"
    for b in result.boxes:
        x0, y0, x1, y1 = b.grid
        assert 0 <= x0 < x1 <= GRID and 0 <= y0 < y1 <= GRID
        assert b.phrase is None or (b.phrase and b.phrase == b.phrase.strip())
        if "&" not in text:
            assert text[b.span[0]] == "{" and text[b.span[1] - 1] == "}"
    for s in result.skipped:
        assert s.text == text[s.span[0] : s.span[1]] and s.reason


# ----------------------------------------------------------------------------------------------------
# Hand examples: the official demo's gallery and real model outputs


def test_single_box() -> None:
    text = "{<57><49><70><72>}"
    r = parse_boxes(text, 100, 100)
    assert [(b.phrase, b.grid, b.span) for b in r.boxes] == [(None, (57, 49, 70, 72), (0, len(text)))]
    assert r.skipped == [] and r.phrases == []


def test_phrase_with_two_boxes() -> None:
    text = "<p>sofas</p> {<57><49><70><72>}<delim>{<26><48><43><71>}"
    r = parse_boxes(text, 100, 100)
    assert [(b.phrase, b.grid) for b in r.boxes] == [("sofas", (57, 49, 70, 72)), ("sofas", (26, 48, 43, 71))]
    assert [text[slice(*b.span)] for b in r.boxes] == ["{<57><49><70><72>}", "{<26><48><43><71>}"]
    assert r.phrases == ["sofas"]
    assert [(p, len(bs)) for p, bs in r.groups] == [("sofas", 2)]


def test_grounded_caption_with_several_phrases() -> None:
    text = (
        "<p>A young man</p> {<8><0><62><91>} wearing <p>a suit</p> {<7><35><56><88>} stands next to "
        "<p>two women</p> {<49><27><61><79>}<delim>{<39><25><48><80>} in <p>a room</p>."
    )
    r = parse_boxes(text, 100, 100)
    assert [(b.phrase, b.grid) for b in r.boxes] == [
        ("A young man", (8, 0, 62, 91)),
        ("a suit", (7, 35, 56, 88)),
        ("two women", (49, 27, 61, 79)),
        ("two women", (39, 25, 48, 80)),
    ]
    assert r.phrases == ["A young man", "a suit", "two women"]  # "a room" has no box
    assert [b.group for b in r.boxes] == [0, 1, 2, 2]
    assert strip_boxes(text) == "A young man wearing a suit stands next to two women in a room."


def test_box_touching_right_and_bottom_edges() -> None:
    r = parse_boxes("{<0><85><100><100>}", 640, 480)
    (b,) = r.boxes
    assert b.grid == (0, 85, 100, 100)
    assert b.box == Box(x0=0.0, y0=85 / 100 * 480, x1=640.0, y1=480.0)


def test_detection_answer_with_repeated_phrase_and_refer_answer() -> None:
    text = "<p>dog</p> {<1><2><30><40>}, <p>cat</p> {<50><50><60><60>}\n<p>dog</p> {<70><10><90><30>}"
    r = parse_boxes(text, 100, 100)
    assert [b.phrase for b in r.boxes] == ["dog", "cat", "dog"]
    assert r.phrases == ["dog", "cat"]
    assert [p for p, _ in r.groups] == ["dog", "cat", "dog"]
    refer = parse_boxes("{<4><50><30><65>}</s>", 100, 100)
    assert [b.grid for b in refer.boxes] == [(4, 50, 30, 65)]


# ----------------------------------------------------------------------------------------------------
# Robust parsing rules


def test_whitespace_inside_and_around_tokens() -> None:
    text = "<p> a dog </p>\n  { <1> <2><3> <4> } <delim> {<5><6><7><8>}"
    r = parse_boxes(text, 100, 100)
    assert [(b.phrase, b.grid) for b in r.boxes] == [("a dog", (1, 2, 3, 4)), ("a dog", (5, 6, 7, 8))]


def test_corners_are_ordered_and_large_values_clamped() -> None:
    r = parse_boxes("{<70><72><57><49>} {<90><101><999><5>} {<05><007><10><20>}", 100, 100)
    assert [b.grid for b in r.boxes] == [(57, 49, 70, 72), (90, 5, 100, 100), (5, 7, 10, 20)]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{<1><2><3>}", "expected 4 coordinates, got 3"),
        ("{<1><2><3><4><5>}", "expected 4 coordinates, got 5"),
        ("{}", "expected 4 coordinates, got 0"),
        ("{<-1><2><3><4>}", REASON_NEGATIVE),
        ("{<1><2><a dog><4>}", REASON_TEXT),
        ("{<1><2> dog <3><4>}", REASON_TEXT),
        ("{<1.5><2><3><4>}", REASON_TEXT),
        ("{<1><2><3><1000>}", REASON_DIGITS),
        ("{<10><20><10><30>}", REASON_DEGENERATE),
        ("{<100><20><120><30>}", REASON_DEGENERATE),  # both x clamp to 100
        ("{<1><2><3>", REASON_UNFINISHED),
        ("{<1><2", REASON_UNFINISHED),
        ("{", REASON_UNFINISHED),
    ],
)
def test_bad_boxes_are_skipped_with_reason(text: str, reason: str) -> None:
    r = parse_boxes(f"x <p>a</p> {text}", 100, 100)
    assert r.boxes == []
    assert [(s.reason, s.text) for s in r.skipped] == [(reason, text)]


def test_unfinished_trailing_box_keeps_earlier_boxes() -> None:
    text = "<p>a</p> {<1><2><3><4>}<delim>{<5><6><7>"
    r = parse_boxes(text, 100, 100)
    assert [(b.phrase, b.grid) for b in r.boxes] == [("a", (1, 2, 3, 4))]
    assert [(s.reason, s.span) for s in r.skipped] == [(REASON_UNFINISHED, (text.index("{<5>"), len(text)))]


def test_skipped_box_does_not_break_its_group() -> None:
    r = parse_boxes("<p>a</p> {<1><2><3>}<delim>{<1><2><3><4>}", 100, 100)
    assert [(b.phrase, b.grid) for b in r.boxes] == [("a", (1, 2, 3, 4))]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<p>a</p>: {<1><2><3><4>}", [None]),  # text between phrase and box
        ("<p>a</p> {<1><2><3><4>} {<5><6><7><8>}", ["a", None]),  # no <delim>: a new bare group
        ("<p>a</p> {<1><2><3><4>}<delim><delim>{<5><6><7><8>}", ["a", None]),
        ("<p>a</p> <delim>{<1><2><3><4>}", [None]),  # stray <delim>
        ("<p> </p> {<1><2><3><4>}", [None]),  # blank phrase
        ("<p>a<p>b</p> {<1><2><3><4>}", ["b"]),  # the last <p> wins
        ("<p>a {<1><2><3><4>}</p> {<5><6><7><8>}", [None, None]),  # a box inside a phrase drops it
        ("</p> {<1><2><3><4>}", [None]),
        ("<p>a</p></p> {<1><2><3><4>}", [None]),
        ("<p>a</p> {<1><2><3><4>}</s>", ["a"]),
    ],
)
def test_phrase_attachment(text: str, expected: list[str | None]) -> None:
    r = parse_boxes(text, 100, 100)
    assert [b.phrase for b in r.boxes] == expected
    check_invariants(text, r)


def test_unbalanced_and_nested_braces() -> None:
    text = "}} {<1><2>{<3><4><5><6>}} {{<7><8><9><10>}"
    r = parse_boxes(text, 100, 100)
    assert [b.grid for b in r.boxes] == [(3, 4, 5, 6), (7, 8, 9, 10)]
    assert [s.reason for s in r.skipped] == [REASON_CLOSE, REASON_OPEN, REASON_CLOSE, REASON_OPEN]
    assert r.skipped[0].text == "}}"  # a run of stray braces is one entry
    check_invariants(text, r)


def test_html_entities_are_unescaped_and_spans_index_the_original() -> None:
    text = "&lt;p&gt;dog&lt;/p&gt; {&lt;1&gt;&lt;2&gt;&lt;3&gt;&lt;4&gt;}&lt;delim&gt;{<5><6><7><8>}"
    r = parse_boxes(text, 100, 100)
    assert [(b.phrase, b.grid) for b in r.boxes] == [("dog", (1, 2, 3, 4)), ("dog", (5, 6, 7, 8))]
    assert [text[slice(*b.span)] for b in r.boxes] == [
        "{&lt;1&gt;&lt;2&gt;&lt;3&gt;&lt;4&gt;}",
        "{<5><6><7><8>}",
    ]
    assert r.text == text
    # An entity that swallows a brace: the span still covers the original characters.
    r = parse_boxes("&#123;<1><2><3><4>&#125; &lt{<1><2><3><4>}", 100, 100)
    assert [r.text[slice(*b.span)] for b in r.boxes] == ["&#123;<1><2><3><4>&#125;", "{<1><2><3><4>}"]


@pytest.mark.parametrize("text", ["", " ", "\n", "hello", "<p>", "</p>", "<delim>", "{", "}", "{}", "&", "&#", "<"])
def test_trivial_inputs(text: str) -> None:
    r = parse_boxes(text, 100, 100)
    assert r.boxes == []
    check_invariants(text, r)


def test_bad_size_or_offset_is_a_caller_error() -> None:
    with pytest.raises(ValueError):
        parse_boxes("{<1><2><3><4>}", 0, 100)
    with pytest.raises(ValueError):
        parse_boxes("{<1><2><3><4>}", 100, 100, offset=1.0)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text())
def test_fuzz_any_text_never_raises(text: str) -> None:
    check_invariants(text, parse_boxes(text, 640, 480))
    assert isinstance(strip_boxes(text), str)
    official_demo_extract(text)
    official_refer_box(text)


@settings(max_examples=300)
@given(st.lists(st.sampled_from([*JUNK_PIECES, "&lt;", "&gt;", "&", "\n", "<unk>", "</s>"]), max_size=80))
def test_fuzz_token_soup_never_raises(pieces: list[str]) -> None:
    text = "".join(pieces)
    check_invariants(text, parse_boxes(text, 640, 480, offset=0.5))
    assert isinstance(strip_boxes(text), str)
    official_demo_extract(text)
    official_refer_box(text)


def _junk(n: int, seed: int) -> str:
    rng = random.Random(seed)
    out: list[str] = []
    size = 0
    while size < n:
        piece = rng.choice(JUNK_PIECES)
        out.append(piece)
        size += len(piece)
    return "".join(out)[:n]


# Each pattern at about n characters.
JUNK_PATTERNS: dict[str, Callable[[int], str]] = {
    "junk0": lambda n: _junk(n, 0),
    "junk1": lambda n: _junk(n, 1),
    "lbraces": lambda n: "{" * n,
    "rbraces": lambda n: "}" * n,
    "popens": lambda n: "<p>" * (n // 3),
    "lt-spaces": lambda n: "<" + " " * n,
    "coords": lambda n: "{<1>" * (n // 4),
    "entities": lambda n: "&lt;" * (n // 4),
    "long-box": lambda n: "{" + "<1>" * (n // 3),
    "boxes": lambda n: "{<1><2><3><4>}<delim>" * (n // 20),
}


def _cpu_seconds(text: str, repeats: int = 3) -> float:
    """The least CPU time of this process for parsing and stripping `text`, garbage collection paused."""
    best = float("inf")
    gc.disable()
    try:
        for _ in range(repeats):
            started = time.process_time()
            parse_boxes(text, 640, 480)
            strip_boxes(text)
            best = min(best, time.process_time() - started)
    finally:
        gc.enable()
    return best


@pytest.mark.parametrize("pattern", JUNK_PATTERNS.values(), ids=JUNK_PATTERNS.keys())
def test_200k_junk_takes_linear_time(pattern: Callable[[int], str]) -> None:
    """No catastrophic backtracking: 4x the text costs about 4x the time (measured 3.8-4.5; quadratic is 16).

    A ratio of CPU times rather than a wall-clock limit: a slow or busy machine (other processes on the cores)
    stretches wall time and changes both runs alike, so only the growth is compared.
    """
    big, small = pattern(200_000), pattern(50_000)
    r = parse_boxes(big, 640, 480)
    stripped = strip_boxes(big)
    assert isinstance(r, ParseResult) and isinstance(stripped, str)
    ratio = _cpu_seconds(big) / max(_cpu_seconds(small), 1e-6)
    assert ratio < 8, f"4x the text took {ratio:.1f}x the CPU time"


# ----------------------------------------------------------------------------------------------------
# Round trips


@given(groups, separators, sizes, sizes)
def test_round_trip_phrases(gs: list[tuple[str, list[Grid]]], sep: str, width: int, height: int) -> None:
    parts = [format_phrase(p, g) for p, g in gs]
    text = "Here: " + sep.join(parts) + "."
    r = parse_boxes(text, width, height)
    assert r.skipped == []
    assert [(b.phrase, b.grid) for b in r.boxes] == [(p, g) for p, grid_list in gs for g in grid_list]
    assert [text[slice(*b.span)] for b in r.boxes] == [format_box(g) for _, gl in gs for g in gl]
    assert [(p, [b.grid for b in bs]) for p, bs in r.groups] == [(p, list(g)) for p, g in gs]
    assert r.phrases == list(dict.fromkeys(p for p, _ in gs))
    # Well-formed text parses the same way in the official demo's parser.
    assert official_demo_extract(text) == [(p, list(g)) for p, g in gs]


@given(st.lists(grids(), min_size=1, max_size=6))
def test_round_trip_bare_boxes(gl: list[Grid]) -> None:
    text = format_boxes(gl)
    r = parse_boxes(text, 100, 100)
    assert [(b.phrase, b.grid) for b in r.boxes] == [(None, g) for g in gl]
    assert len(r.groups) == 1
    assert official_refer_box(text) == gl[0]


@given(grids(), sizes, sizes, st.sampled_from([0.0, 0.5]))
def test_round_trip_grid_pixels_grid(grid: Grid, width: int, height: int, offset: float) -> None:
    (b,) = parse_boxes(format_box(grid), width, height, offset=offset).boxes
    assert b.box == grid_to_pixels(grid, width, height, offset=offset)
    assert pixels_to_grid(b.box, width, height) == grid


def test_format() -> None:
    assert format_box((57, 49, 70, 72)) == "{<57><49><70><72>}"
    assert format_boxes([(57, 49, 70, 72), (26, 48, 43, 71)]) == "{<57><49><70><72>}<delim>{<26><48><43><71>}"
    assert format_boxes([]) == ""
    assert (
        format_phrase(" sofas ", [(57, 49, 70, 72), (26, 48, 43, 71)])
        == "<p>sofas</p> {<57><49><70><72>}<delim>{<26><48><43><71>}"
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: format_box((1, 2, 3, 101)),
        lambda: format_box((-1, 2, 3, 4)),
        lambda: format_box((1.5, 2, 3, 4)),  # type: ignore[arg-type]
        lambda: format_box((1, 2, 3)),  # type: ignore[arg-type]
        lambda: format_phrase("", [(1, 2, 3, 4)]),
        lambda: format_phrase("a", []),
        lambda: format_phrase("a</p> b", [(1, 2, 3, 4)]),
        lambda: format_phrase("a {b}", [(1, 2, 3, 4)]),
    ],
)
def test_format_rejects_what_cannot_round_trip(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


# ----------------------------------------------------------------------------------------------------
# Pixel mapping


def test_pixel_mapping_is_exact_for_non_square_images() -> None:
    assert grid_to_pixels((50, 50, 100, 100), 640, 480) == Box(x0=320.0, y0=240.0, x1=640.0, y1=480.0)
    assert grid_to_pixels((25, 0, 75, 50), 640, 480) == Box(x0=160.0, y0=0.0, x1=480.0, y1=240.0)
    (b,) = parse_boxes("{<57><49><70><72>}", 640, 480).boxes
    assert b.box.xyxy == (57 / 100 * 640, 49 / 100 * 480, 70 / 100 * 640, 72 / 100 * 480)  # official c/100*W


def test_pixel_offset_centres_the_cell_and_clamps_to_the_image() -> None:
    assert grid_to_pixels((50, 50, 100, 100), 640, 480, offset=0.5) == Box(x0=323.2, y0=242.4, x1=640.0, y1=480.0)
    with pytest.raises(ValueError):
        grid_to_pixels((1, 2, 3, 4), 640, 480, offset=-0.5)


def test_pixels_to_grid_truncates_like_training() -> None:
    assert pixels_to_grid(Box(x0=320.0, y0=240.0, x1=640.0, y1=480.0), 640, 480) == (50, 50, 100, 100)
    assert pixels_to_grid((639.9, 479.9, 640.0, 480.0), 640, 480) == (99, 99, 100, 100)  # 99.98 -> 99
    assert pixels_to_grid((6.3, 4.7, 12.7, 9.5), 640, 480) == (0, 0, 1, 1)
    assert pixels_to_grid((-5.0, -0.1, 700.0, 481.0), 640, 480) == (0, 0, 100, 100)  # clamped


@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_pixels_to_grid_matches_official_formula(v: int, dim: int) -> None:
    got = pixels_to_grid((v, v, v, v), dim, dim)[0]
    official = min(max(int(v / dim * 100), 0), 100)
    # The only departure: exact multiples that float noise pushes one cell down (29 / 100 * 100 = 28.99..).
    assert got == official or (v * 100 % dim == 0 and got == min(v * 100 // dim, 100))


# ----------------------------------------------------------------------------------------------------
# Official-compatible parsers (demo_v2.py, eval_scripts/eval_ref.py)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "<p>sofas</p> {<57><49><70><72>}<delim>{<26><48><43><71>}",
            [("sofas", [(57, 49, 70, 72), (26, 48, 43, 71)])],
        ),
        # Step 2: an unfinished trailing box is cut off after the last '}'.
        ("<p>a</p> {<1><2><3><4>} and <p>b</p> {<5><6>", [("a", [(1, 2, 3, 4)])]),
        ("<p>a</p> {<1><2><3><4>}<delim>{<5><6><7>", [("a", [(1, 2, 3, 4)])]),
        # Step 3: a '}' followed by '<' does not end the match, so two groups become one and the split fails.
        ("<p>a</p> {<1><2><3><4>}<p>b</p> {<5><6><7><8>}", []),
        # Step 4: pieces without exactly 4 integers are dropped; negatives and > 100 are kept as is.
        ("<p>a</p> {<1><2><3>}<delim>{<-1><2><300><4>}", [("a", [(-1, 2, 300, 4)])]),
        ("<p>a</p> there is nothing}", [("a", [])]),
        # Step 1: HTML entities.
        ("&lt;p&gt;dog&lt;/p&gt; {&lt;1&gt;&lt;2&gt;&lt;3&gt;&lt;4&gt;}", [("dog", [(1, 2, 3, 4)])]),
        # Step 5: no <p> match, so "refer" mode over the whole text.
        ("{<4><50><30><65>}</s>", [(None, [(4, 50, 30, 65)])]),
        ("the box 1 2 3 4", [(None, [(1, 2, 3, 4)])]),
        ("{<1><2><3><4>}<delim>{<5><6><7><8>}", []),
        ("<p>a</p> no box", []),
        ("", []),
    ],
)
def test_official_demo_extract(text: str, expected: list) -> None:
    assert official_demo_extract(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{<57><49><70><72>}", (57, 49, 70, 72)),
        ("  {<57><49><70><72>}</s>", (57, 49, 70, 72)),
        ("<unk> <unk>{ <1> <2><3><4>}", (1, 2, 3, 4)),
        ("{<1><2><3><4>} and more 5 6", (1, 2, 3, 4)),
        ("{<101><2><999><4>}", (101, 2, 999, 4)),  # unclamped, like the eval
        ("{<70><72><57><49>}", (70, 72, 57, 49)),  # unordered, like the eval
        ("the person is at {<1><2><3><4>}", None),  # must start with the box
        ("{<1><2><3>}", None),
        ("{<1><2><3><1000>}", None),
        ("{<-1><2><3><4>}", None),
        ("\n{<1><2><3><4>}", None),  # only spaces are removed
        ("", None),
    ],
)
def test_official_refer_box(text: str, expected: tuple[int, int, int, int] | None) -> None:
    assert official_refer_box(text) == expected


@settings(max_examples=300)
@given(st.text(alphabet="&#;ltgpamxX0123456789{}<> \n", max_size=40))
def test_unescape_map_agrees_with_html_unescape(text: str) -> None:
    # The parser unescapes entity by entity to keep spans; it must read the same text as html.unescape.
    u = _Unescaped(text)
    assert u.text == html.unescape(text)
    prev = 0
    for i, ch in enumerate(u.text):
        a, b = u.span(i, i + 1)
        assert prev <= a < b <= len(text)
        assert ch in html.unescape(text[a:b])
        prev = a


# ----------------------------------------------------------------------------------------------------
# strip_boxes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<p>sofas</p> {<57><49><70><72>}<delim>{<26><48><43><71>}", "sofas"),
        ("{<57><49><70><72>}", ""),
        ("There is <p>a dog</p> {<1><2><3><4>} , and <p>a cat</p> {<5><6>", "There is a dog, and a cat"),
        ("keep {braces with words} and &lt;3", "keep {braces with words} and <3"),
        ("line one <p>x</p> {<1><2><3><4>}\n  line two", "line one x\nline two"),
    ],
)
def test_strip_boxes(text: str, expected: str) -> None:
    assert strip_boxes(text) == expected
