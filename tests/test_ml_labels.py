"""Label config parsing, label mapping, percent geometry and the interactive prompt rule (no model, no server)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from label_studio_access.label_config import LabelConfigError, ProjectLabels
from ml_backend.queries import batch_queries, drawn_rectangle, identify_query, prompt_query, typed_prompt
from model.annotations import Box, Task
from model.regions import box_to_value, rectangle_region, value_to_box

CONFIG = """
<View>
  <Image name="img" value="$photo"/>
  <RectangleLabels name="boxes" toName="img">
    <Label value="Car" prompt="car or van"/>
    <Label value="traffic light"/>
    <Label value="light"/>
    <Label value="Person" predicted_values="pedestrian,person"/>
    <Label value="dog" alias="D"/>
  </RectangleLabels>
  <TextArea name="prompt" toName="img" editable="true" showSubmitButton="true"/>
</View>
"""


@pytest.fixture(scope="module")
def labels() -> ProjectLabels:
    return ProjectLabels.parse(CONFIG)


def test_parse_finds_the_rectangle_image_pair_and_the_prompt_box(labels: ProjectLabels) -> None:
    assert (labels.from_name, labels.to_name, labels.value_key, labels.prompt_name) == (
        "boxes",
        "img",
        "photo",
        "prompt",
    )
    assert [spec.value for spec in labels.labels] == ["Car", "traffic light", "light", "Person", "D"]


def test_each_label_is_prompted_with_its_prompt_attribute_predicted_values_or_visible_name(
    labels: ProjectLabels,
) -> None:
    queries = batch_queries(labels)
    assert [(q.task, q.query, q.label.value) for q in queries] == [
        (Task.detection, "car or van", "Car"),
        (Task.detection, "traffic light", "traffic light"),
        (Task.detection, "light", "light"),
        (Task.detection, "pedestrian", "Person"),
        (Task.detection, "dog", "D"),  # the visible name is prompted; the alias is what Label Studio stores
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("car", "Car"),
        ("CARS", "Car"),
        ("the red car on the left", "Car"),
        ("a traffic light", "traffic light"),  # the longest name wins over "light"
        ("pedestrians", "Person"),
        ("dog", "D"),
        ("a bicycle", None),
    ],
)
def test_find_maps_text_to_a_configured_label(labels: ProjectLabels, text: str, expected: str | None) -> None:
    found = labels.find(text)
    assert (found.value if found else None) == expected


@pytest.mark.parametrize(
    "config",
    [
        "<View><Image name='i' value='$image'/></View>",
        "<View><Text name='t' value='$text'/>"
        "<RectangleLabels name='r' toName='t'><Label value='a'/></RectangleLabels></View>",
        "<View><Image name='i' value='$image'/><RectangleLabels name='r' toName='i'></RectangleLabels></View>",
        "<View><Image",
        "",
    ],
)
def test_configs_we_cannot_serve_fail_with_the_fix(config: str) -> None:
    with pytest.raises(LabelConfigError) as err:
        ProjectLabels.parse(config)
    assert any(word in str(err.value) for word in ("RectangleLabels", "Label", "parse", "labeling config"))


@pytest.mark.parametrize(
    ("prompt", "task", "text", "label"),
    [
        ("the car on the left", Task.refer, "the car on the left", "Car"),
        ("cars", Task.detection, "car or van", "Car"),
        ("all cars", Task.detection, "car or van", "Car"),
        ("find all red cars", Task.detection, "red cars", "Car"),
        ("every traffic light", Task.detection, "traffic light", "traffic light"),
        ("[detection] red car", Task.detection, "red car", "Car"),
        ("[refer] the tallest person", Task.refer, "the tallest person", "Person"),
        ("the thing in the corner", Task.refer, "the thing in the corner", "Car"),  # no label named: the first
    ],
)
def test_interactive_rule(labels: ProjectLabels, prompt: str, task: Task, text: str, label: str) -> None:
    query = prompt_query(prompt, labels)
    assert (query.task, query.query, query.label.value) == (task, text, label)


def test_context_gives_the_typed_prompt_or_the_drawn_rectangle(labels: ProjectLabels) -> None:
    textarea = {"from_name": "prompt", "to_name": "img", "type": "textarea", "value": {"text": ["", "the dog"]}}
    rectangle = {
        "id": "r1",
        "from_name": "boxes",
        "to_name": "img",
        "type": "rectanglelabels",
        "value": {"x": 10, "y": 20, "width": 30, "height": 40, "rectanglelabels": ["Car"]},
    }
    assert typed_prompt({"result": [textarea]}, labels) == "the dog"
    assert typed_prompt(None, labels) is None
    assert drawn_rectangle({"result": [textarea]}, labels) is None
    query = identify_query(drawn_rectangle({"result": [rectangle]}, labels), labels, width=200, height=100)
    assert query.task == Task.identify
    assert query.box.xyxy == pytest.approx((20, 20, 80, 60))


def test_percent_geometry_on_a_non_square_image() -> None:
    value = box_to_value(Box(x0=64, y0=48, x1=320, y1=240), width=640, height=480)
    assert value == pytest.approx({"x": 10, "y": 10, "width": 40, "height": 40, "rotation": 0})
    assert value_to_box(value, 640, 480).xyxy == pytest.approx((64, 48, 320, 240))


def test_a_rotated_rectangle_becomes_its_upright_hull() -> None:
    # 90 degrees clockwise about the top-left corner: a 100x50 px box hangs down-left of its corner
    value = {"x": 50, "y": 10, "width": 50, "height": 25, "rotation": 90}
    box = value_to_box(value, width=200, height=200)
    assert box.xyxy == pytest.approx((50, 20, 100, 120))


def test_a_region_validates_with_the_sdk_and_a_wrong_label_does_not(labels: ProjectLabels) -> None:
    box = Box(x0=10, y0=10, x1=50, y1=40)
    good = rectangle_region(box, "Car", 0.9, width=100, height=80, from_name="boxes", to_name="img")
    assert labels.validation_errors({"result": [good], "score": 0.9}) == []
    bad = rectangle_region(box, "bicycle", 0.9, width=100, height=80, from_name="boxes", to_name="img")
    assert labels.validation_errors({"result": [bad]})
    wrong_name = rectangle_region(box, "Car", 0.9, width=100, height=80, from_name="label", to_name="img")
    assert labels.validation_errors({"result": [wrong_name]})


sizes = st.integers(min_value=1, max_value=20000)


@given(sizes, sizes, st.data())
def test_pixels_to_percent_and_back_round_trips(width: int, height: int, data: st.DataObject) -> None:
    x0 = data.draw(st.floats(min_value=0, max_value=width - 0.01))
    y0 = data.draw(st.floats(min_value=0, max_value=height - 0.01))
    x1 = data.draw(st.floats(min_value=x0 + 0.01, max_value=width))
    y1 = data.draw(st.floats(min_value=y0 + 0.01, max_value=height))
    box = Box(x0=x0, y0=y0, x1=x1, y1=y1)
    value = box_to_value(box, width, height)
    assert all(0 <= value[k] <= 100 for k in ("x", "y", "width", "height"))
    assert value["x"] + value["width"] <= 100 + 1e-9
    back = value_to_box(value, width, height)
    assert back is not None
    assert back.xyxy == pytest.approx(box.xyxy, abs=1e-6 * max(width, height))
