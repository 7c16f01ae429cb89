"""The pydantic data model: box geometry and validation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from model.annotations import Annotation, Box, Category, Dataset, ImageRecord, Origin, Proposal, Task

coords = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False)
sizes = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False)


@st.composite
def boxes(draw) -> Box:
    x, y, w, h = draw(coords), draw(coords), draw(sizes), draw(sizes)
    return Box.from_xywh([x, y, w, h])


@given(boxes(), boxes())
def test_iou_is_symmetric_and_bounded(a: Box, b: Box) -> None:
    assert 0.0 <= a.iou(b) <= 1.0 + 1e-9
    assert a.iou(b) == pytest.approx(b.iou(a))


@given(boxes())
def test_box_with_itself_has_iou_one_and_xywh_round_trips(box: Box) -> None:
    assert box.iou(box) == pytest.approx(1.0)
    back = Box.from_xywh(box.xywh)
    assert back.xyxy == pytest.approx(box.xyxy)


def test_iou_hand_cases() -> None:
    a = Box.from_xyxy([0, 0, 10, 10])
    assert a.iou(Box.from_xyxy([5, 0, 15, 10])) == pytest.approx(50 / 150)
    assert a.iou(Box.from_xyxy([10, 10, 20, 20])) == 0.0
    assert a.area == 100 and a.width == 10 and a.height == 10


@pytest.mark.parametrize("xyxy", [[5, 0, 5, 10], [0, 5, 10, 5], [10, 0, 0, 10]])
def test_degenerate_or_reversed_boxes_are_rejected(xyxy) -> None:
    with pytest.raises(ValidationError, match="x0 < x1"):
        Box.from_xyxy(xyxy)


def test_proposal_score_must_be_a_probability() -> None:
    box = Box.from_xyxy([0, 0, 1, 1])
    with pytest.raises(ValidationError):
        Proposal(box=box, label="cat", score=1.5, task=Task.detection, prompt="[detection] cat")
    p = Proposal(box=box, label="cat", score=0.5, task="detection", prompt="[detection] cat")
    assert p.task is Task.detection


def test_annotation_and_dataset_rules(tmp_path) -> None:
    with pytest.raises(ValidationError, match="blank"):
        Annotation(box=Box.from_xyxy([0, 0, 1, 1]), label="  ")
    a = Annotation(box=Box.from_xyxy([0, 0, 1, 1]), label="cat")
    assert a.origin is Origin.manual
    record = ImageRecord(path=tmp_path / "a.jpg", width=4, height=3, annotations=[a])
    Dataset(categories=[Category(id=1, name="cat")], images=[record])
    with pytest.raises(ValidationError, match="unique"):
        Dataset(categories=[Category(id=1, name="cat"), Category(id=1, name="dog")])


def test_task_identifiers() -> None:
    assert Task.refer.identifier == "[refer]" and Task.chat.identifier == ""
    assert Task.detection.answers_with_boxes and not Task.vqa.answers_with_boxes


@pytest.mark.parametrize("xyxy", [(0, 0, math.inf, 10), (0, 0, math.nan, 10), (-math.inf, 0, 5, 10)])
def test_a_box_with_infinity_or_nan_is_refused(xyxy: tuple[float, float, float, float]) -> None:
    # From COCO (x + w overflowing), JSON `Infinity` or the command line, it would crash the grid maths later.
    with pytest.raises(ValidationError, match="finite"):
        Box.from_xyxy(xyxy)
