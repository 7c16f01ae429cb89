"""One request shape: what the model is asked (task, query, box) is :class:`model.request.Prompt` on every surface.

The model's ProposeRequest, the desktop app's planned prompts and engine requests, the backend's queries and the
/propose wire body once each declared their own task/query/box. Now they carry or subclass the one Prompt, which
is torch-free, so the desktop app and a remote-only client never load the model.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from patience import HANG_S
from pydantic import TypeAdapter, ValidationError

from annotator.core.engines import EngineRequest
from annotator.core.records import LabelRow
from annotator.core.runs import plan_run
from label_studio_access.label_config import ProjectLabels
from ml_backend.queries import batch_queries, identify_query, prompt_query
from model.annotations import Box, Task
from model.propose_api import ProposeBody
from model.request import Prompt

ROOT = Path(__file__).resolve().parents[1]
CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="dog"/></RectangleLabels></View>'
)


def test_every_surface_carries_the_one_prompt_type() -> None:
    from model.proposer import Prompt as ReExported
    from model.proposer import ProposeRequest

    assert ReExported is Prompt
    box = Box(x0=1, y0=2, x1=30, y1=40)
    labels = ProjectLabels.parse(CONFIG)
    planned = [
        *plan_run(Task.refer, "the dog on the left", [LabelRow("dog", "#000000")]),
        *plan_run(Task.identify, "", [], selected_box=box),
        *batch_queries(labels),
        prompt_query("the dog on the left", labels),
        identify_query({"value": {"x": 10, "y": 10, "width": 20, "height": 20}}, labels, 100, 100),
    ]
    assert all(isinstance(p, Prompt) for p in planned)
    # Each goes to the model, to an engine and over the wire as itself: no field is copied by hand.
    for prompt in planned:
        assert ProposeRequest.of("a.jpg", prompt).prompt == Prompt(prompt.task, prompt.query, prompt.box)
        assert EngineRequest(Path("a.jpg"), prompt).prompt is prompt
    body = ProposeBody(image=b"jpeg", prompts=planned)
    assert ProposeBody.model_validate_json(body.to_json()).prompts == [Prompt(p.task, p.query, p.box) for p in planned]


def test_the_readme_s_positional_propose_request_still_works() -> None:
    from model.proposer import ProposeRequest

    request = ProposeRequest("a.jpg", "detection", "cat")
    assert (request.image, request.prompt, request.history) == ("a.jpg", Prompt(Task.detection, "cat"), ())
    assert (request.task, request.query, request.box) == (Task.detection, "cat", None)  # its parts, read-only
    keywords = ProposeRequest(image="a.jpg", task=Task.identify, box=Box(x0=1, y0=2, x1=3, y1=4))
    assert keywords.prompt.box == Box(x0=1, y0=2, x1=3, y1=4)
    with pytest.raises(ValidationError):
        ProposeRequest("a.jpg", "find", "cat")  # not a task: refused when built, not deep in a batch


def test_the_desktop_and_a_remote_only_client_do_not_load_torch() -> None:
    code = textwrap.dedent(
        """
        import sys
        from annotator.core import engines, runs
        from model import labels, propose_api, request
        from model.annotations import Task
        from model.results import GenerationOptions
        body = propose_api.ProposeBody(
            image=b"png", prompts=runs.plan_run(Task.detection, "cat, dog", []),
            options=propose_api.ProposeOptions.of(GenerationOptions(max_new_tokens=4)),
        )
        propose_api.ProposeBody.model_validate_json(body.to_json())
        loaded = sorted(name for name in ("torch", "transformers") if name in sys.modules)
        assert not loaded, loaded
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stderr


coordinates = st.floats(min_value=0, max_value=5000, allow_nan=False)


@st.composite
def prompts(draw: st.DrawFn) -> Prompt:
    task = draw(st.sampled_from(list(Task)))
    query = draw(st.one_of(st.none(), st.text(max_size=40)))
    box = None
    if draw(st.booleans()):
        x0, y0 = draw(coordinates), draw(coordinates)
        box = Box(x0=x0, y0=y0, x1=x0 + draw(st.floats(0.5, 500)), y1=y0 + draw(st.floats(0.5, 500)))
    return Prompt(task, query, box)


@given(prompts())
def test_a_prompt_survives_json_with_its_box_as_xyxy(prompt: Prompt) -> None:
    adapter = TypeAdapter(Prompt)
    data = adapter.dump_python(prompt, mode="json")
    assert data["box"] == (list(prompt.box.xyxy) if prompt.box else None)  # the documented wire form
    assert adapter.validate_json(adapter.dump_json(prompt)) == prompt


def test_a_prompt_refuses_what_is_not_one() -> None:
    with pytest.raises(ValidationError, match="expected"):
        Prompt(Task.identify, box=[1, 2, 3])
    with pytest.raises(ValidationError, match="box must have x0 < x1"):
        Prompt(Task.identify, box=[5, 2, 3, 9])
    with pytest.raises(ValidationError):
        TypeAdapter(Prompt).validate_python({"task": "refer", "querry": "the dog"})  # a typo is not ignored
