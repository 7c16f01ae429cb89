"""One label matcher for every surface: which label a prompt or a model answer names, and what a label is asked as.

The desktop app (annotator.core.runs) and the Label Studio backend (label_studio_access.label_config) once had a matcher
each, and they disagreed ("boxes" named "box" on the desktop only, "traffic_light" named "traffic light" in the
backend only). Both now call model.labels; the cross-surface tests below keep them from drifting apart again.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annotator.core.records import LabelRow
from annotator.core.runs import detection_prompts, exact_label, label_from_answer, label_named
from label_studio_access.label_config import ProjectLabels
from model.labels import LabelMatcher, label_prompt


def _backend(rows: list[LabelRow]) -> ProjectLabels:
    """The Label Studio project with the same labels (and prompts) as the desktop rows."""
    labels = "".join(
        f'<Label value="{row.name}"' + (f' prompt="{row.prompt}"' if row.prompt else "") + "/>" for row in rows
    )
    return ProjectLabels.parse(
        f'<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">{labels}'
        "</RectangleLabels></View>"
    )


def _desktop_finds(text: str, rows: list[LabelRow]) -> str | None:
    return exact_label(text, rows) or label_named(text, rows)


def _backend_finds(text: str, labels: ProjectLabels) -> str | None:
    found = labels.find(text)
    return found.value if found else None


def _backend_exact(text: str, labels: ProjectLabels) -> str | None:
    found = labels.find_exact(text)
    return found.value if found else None


ROWS = [
    LabelRow("box", "#000000"),
    LabelRow("traffic light", "#111111"),
    LabelRow("light", "#222222"),
    LabelRow("fire_hydrant", "#333333"),
    LabelRow("city", "#444444"),
    LabelRow("glass", "#555555"),
    LabelRow("Person", "#666666", prompt="man"),
    LabelRow("t-shirt", "#777777"),
    LabelRow("cars", "#888888"),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("boxes", "box"),  # the desktop said box, the backend nothing
        ("traffic_light", "traffic light"),  # the backend said traffic light, the desktop nothing
        ("Traffic-Lights", "traffic light"),
        ("the traffic lights on the left", "traffic light"),  # the longest name wins over "light"
        ("fire hydrant", "fire_hydrant"),
        ("two fire hydrants", "fire_hydrant"),
        ("cities", "city"),
        ("glasses", "glass"),
        ("the tall man", "Person"),  # a label's prompt names it too
        ("T shirts", "t-shirt"),
        ("a car", "cars"),  # a plural label is named by its singular
        ("lightning", None),  # whole words only
        ("a bicycle", None),
    ],
)
def test_the_desktop_and_the_backend_find_the_same_label(text: str, expected: str | None) -> None:
    labels = _backend(ROWS)
    assert _desktop_finds(text, ROWS) == expected
    assert _backend_finds(text, labels) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("boxes", "box"), ("TRAFFIC_LIGHTS", "traffic light"), ("fire hydrants", "fire_hydrant"), ("man", "Person"),
     ("a box", None)],
)  # fmt: skip
def test_the_desktop_and_the_backend_agree_on_exact_names(text: str, expected: str | None) -> None:
    assert exact_label(text, ROWS) == expected
    assert _backend_exact(text, _backend(ROWS)) == expected


def test_an_identify_answer_maps_to_the_same_label_on_both_surfaces() -> None:
    labels = _backend(ROWS)
    for answer in ("Boxes.", "It is a traffic_light.", "two glasses", "a man"):
        assert label_from_answer(answer, ROWS) == _backend_finds(answer, labels) is not None


def test_a_label_is_asked_for_by_the_same_prompt_on_both_surfaces() -> None:
    labels = _backend(ROWS)
    desktop = [p.query for p in detection_prompts(ROWS)]
    assert desktop == [spec.prompt for spec in labels.labels]
    assert desktop[3] == "fire hydrant"  # the model is asked in words
    assert desktop[6] == "man"


WORDS = st.sampled_from(["box", "bus", "city", "light", "traffic", "dog", "hot", "glass", "key", "car", "shoe"])


@st.composite
def label_rows(draw: st.DrawFn) -> list[LabelRow]:
    names = draw(
        st.lists(st.lists(WORDS, min_size=1, max_size=2).map(" ".join), min_size=1, max_size=4, unique_by=str.casefold)
    )
    return [LabelRow(name, "#000000") for name in names]


@st.composite
def texts(draw: st.DrawFn) -> str:
    words = draw(st.lists(st.one_of(WORDS, st.sampled_from(["a", "the", "on", "boxes", "cities", "dogs"])), max_size=5))
    separator = draw(st.sampled_from([" ", "_", "-", "  "]))
    text = separator.join(words)
    return draw(st.sampled_from([text, text.upper(), text.title()]))


@settings(max_examples=60, deadline=None)
@given(label_rows(), texts())
def test_any_text_names_the_same_label_on_both_surfaces(rows: list[LabelRow], text: str) -> None:
    labels = _backend(rows)
    assert _desktop_finds(text, rows) == _backend_finds(text, labels)
    assert exact_label(text, rows) == _backend_exact(text, labels)


# --- the rule itself (model.labels) -----------------------------------------------------------------------------

PLURALS = [
    ("box", "boxes"), ("bus", "buses"), ("glass", "glasses"), ("church", "churches"), ("dish", "dishes"),
    ("city", "cities"), ("key", "keys"), ("tomato", "tomatoes"), ("photo", "photos"), ("car", "cars"),
    ("shoe", "shoes"), ("traffic light", "traffic lights"), ("hot dog", "hot dogs"),
]  # fmt: skip


@pytest.mark.parametrize(("singular", "plural"), PLURALS)
def test_a_name_is_found_in_either_number(singular: str, plural: str) -> None:
    assert LabelMatcher([("x", [singular])]).exact(plural) == "x"
    assert LabelMatcher([("x", [plural])]).exact(singular) == "x"
    assert LabelMatcher([("x", [singular])]).find(f"two {plural} on the table") == "x"


SAFE_WORDS = ["box", "bus", "city", "light", "traffic", "dog", "hot", "glass", "key", "car", "shoe", "fire hydrant"]


SEPARATORS = st.sampled_from([" ", "_", "-", " _ "])


@given(st.lists(st.sampled_from(SAFE_WORDS), min_size=1, max_size=5), SEPARATORS, st.data())
def test_case_and_separators_do_not_matter(words: list[str], separator: str, data: st.DataObject) -> None:
    names = data.draw(st.lists(st.sampled_from(SAFE_WORDS), min_size=1, max_size=4, unique=True))
    matcher = LabelMatcher([(name, [name]) for name in names])
    plain = " ".join(words)
    varied = separator.join(word.upper() if i % 2 else word.title() for i, word in enumerate(words))
    assert matcher.find(varied) == matcher.find(plain)
    assert matcher.exact(varied) == matcher.exact(plain)


@given(st.sampled_from(SAFE_WORDS), st.text("qjz", min_size=1, max_size=3), st.booleans())
def test_a_name_counts_only_as_whole_words(name: str, extra: str, before: bool) -> None:
    glued = extra + name if before else name + extra
    assert LabelMatcher([(name, [name])]).find(f"a {glued} here") is None


@given(st.permutations(["light", "traffic light", "traffic"]), st.sampled_from(["the ", "", "two "]))
def test_the_longest_name_wins_whatever_the_order(names: list[str], before: str) -> None:
    matcher = LabelMatcher([(name, [name]) for name in names])
    assert matcher.find(f"{before}traffic lights by the road") == "traffic light"


def test_a_label_prompt_is_its_own_prompt_else_its_name_in_words() -> None:
    assert label_prompt("Car", "car or van") == "car or van"
    assert label_prompt("Person", "  ", "pedestrian") == "pedestrian"  # a blank prompt falls through
    assert label_prompt("fire_hydrant") == "fire hydrant"
    assert label_prompt("T-shirt", None) == "T-shirt"
    assert label_prompt("dog", " big   dog ") == "big dog"
