"""Requests that once reached the model and failed there (issue 13, item 18): a seed of 2**70, sampling at a
temperature of 1e-300, an identify box with Infinity, a lone surrogate in a query. Each is now refused where it
enters - `/propose`, the interactive context of `/predict`, the command line - with a 400 or a one-line error
naming the field, never a 500 or a traceback.

Through the real Flask app and the shipped tiny shapes model; the command line as a subprocess.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_cli import assert_one_line_error, run

from label_studio_access.media import MediaFetcher, MediaSettings
from ml_backend.backend import MiniGPTBackend
from ml_backend.server import create_app
from ml_backend.settings import load_proposer
from model.propose_api import ProposeAnswer
from model.results import MAX_SEED, GenerationOptions
from model.synthetic.shapes_model import SHIPPED_DIR

CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="circle"/><Label value="square"/></RectangleLabels>'
    '<TextArea name="prompt" toName="image" editable="true"/></View>'
)


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("local-files")
    (folder / "a.png").write_bytes(_png())
    return folder


@pytest.fixture(scope="module")
def client(root: Path):
    fetcher = MediaFetcher(MediaSettings(label_studio_url=None, api_key=None, local_files_root=root))
    return create_app(MiniGPTBackend(load_proposer(str(SHIPPED_DIR), "cpu"), fetcher)).test_client()


IMAGE = base64.b64encode(_png()).decode()


def _post(client, path: str, body: str):
    """Posts JSON text as written: it can hold what json.dumps would not write from a dict (a lone surrogate) or
    writes although JSON has no such thing (Infinity, NaN), as an attacker's client does."""
    return client.post(path, data=body.encode("utf-8", "surrogatepass"), content_type="application/json")


def _propose(prompt: str, options: str = '{"max_new_tokens": 2}') -> str:
    return f'{{"image": "{IMAGE}", "prompts": [{prompt}], "options": {options}}}'


def _assert_400(response, *words: str) -> None:
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    error = response.get_json()["error"]
    assert "\n" not in error and len(error) < 400, error
    for word in words:
        assert word in error, error


@pytest.mark.parametrize(
    ("prompt", "options", "words"),
    [
        ('{"task": "caption"}', f'{{"seed": {2**70}, "max_new_tokens": 2}}', ["options.seed", f"{MAX_SEED}"]),
        ('{"task": "caption"}', '{"seed": -1}', ["options.seed", "greater than or equal to 0"]),
        ('{"task": "caption"}', '{"do_sample": true, "temperature": 1e-300}', ["options.temperature", "0.01"]),
        ('{"task": "caption"}', '{"do_sample": true, "repetition_penalty": 1e-300}', ["options.repetition_penalty"]),
        ('{"task": "caption"}', '{"do_sample": true, "temperature": Infinity}', ["options.temperature", "finite"]),
        # found by the fuzzer below: 1e300 is infinite in float32, and -inf / inf is NaN (min_new_tokens masks EOS)
        ('{"task": "caption"}', '{"do_sample": true, "temperature": 1e300, "min_new_tokens": 1}', ["100"]),
        ('{"task": "caption"}', '{"top_p": NaN}', ["options.top_p"]),
        ('{"task": "identify", "box": [0, 0, Infinity, 10]}', "{}", ["prompts.0.box.x1", "finite"]),
        ('{"task": "identify", "box": [0, NaN, 10, 10]}', "{}", ["prompts.0.box.y0", "finite"]),
        ('{"task": "identify", "box": [0, 0, 1e400, 10]}', "{}", ["prompts.0.box.x1", "finite"]),
        ('{"task": "refer", "query": "\\ud800"}', "{}", ["prompts.0.query", "lone surrogate", "ud800"]),
        ('{"task": "refer", "query": "the \\udfff circle"}', "{}", ["prompts.0.query", "at position 4"]),
    ],
)
def test_propose_refuses_what_once_failed_inside_the_model(client, prompt: str, options: str, words) -> None:
    # Before: seed 2**70 ("Overflow when unpacking long long"), temperature or repetition_penalty 1e-300 (or 1e300)
    # with sampling ("probability tensor contains inf"), a lone surrogate ("surrogates not allowed" in the tokenizer)
    # were 500s. Infinity in a box was a 400 already (Box refuses it); kept here so it stays one.
    _assert_400(_post(client, "/propose", _propose(prompt, options)), *words)


def _context(*items: dict[str, Any] | str) -> str:
    results = ", ".join(item if isinstance(item, str) else json.dumps(item) for item in items)
    task = '{"id": 1, "data": {"image": "/data/local-files/?d=a.png"}}'
    context = f'{{"context": {{"result": [{results}]}}}}'
    return f'{{"tasks": [{task}], "label_config": {json.dumps(CONFIG)}, "params": {context}}}'


def _typed(text_json: str) -> str:
    return f'{{"type": "textarea", "from_name": "prompt", "to_name": "image", "value": {{"text": [{text_json}]}}}}'


def _drawn(value_json: str) -> str:
    return f'{{"id": "r1", "type": "rectanglelabels", "from_name": "label", "to_name": "image", "value": {value_json}}}'


@pytest.mark.parametrize(
    ("item", "words"),
    [
        (_typed('"\\ud800"'), ["query", "lone surrogate"]),
        (_typed('"[refer] the \\udfff circle"'), ["query", "lone surrogate"]),
        (_drawn('{"x": 0, "y": 0, "width": Infinity, "height": 10}'), ["value.width", "finite"]),
        (_drawn('{"x": NaN, "y": 0, "width": 10, "height": 10}'), ["value.x", "finite"]),
        (_drawn('{"x": 0, "y": 0, "width": 10, "height": 10, "rotation": "abc"}'), ["value.rotation"]),
        (_drawn('{"x": 0, "y": 0, "width": 10, "height": 10, "rotation": Infinity}'), ["value.rotation", "finite"]),
        (_drawn('{"x": 1e308, "y": 0, "width": 10, "height": 10}'), ["value.x"]),
        (_drawn('{"x": 0, "y": 0, "width": "wide", "height": 10}'), ["value.width"]),
    ],
)
def test_predict_refuses_an_interactive_context_that_is_not_text_or_numbers(client, item: str, words) -> None:
    # Before: a lone surrogate in the typed prompt and a rotation of "abc" or Infinity were 500s.
    _assert_400(_post(client, "/predict", _context(item)), *words)


def test_a_drawn_rectangle_outside_the_image_still_gets_no_suggestion_not_an_error(client) -> None:
    for value in ('{"x": 200, "y": 0, "width": 10, "height": 10}', '{"x": 0, "y": 0, "width": 0, "height": 10}'):
        response = _post(client, "/predict", _context(_drawn(value)))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["results"][0]["result"] == []


# Request options, fuzzed through /propose: every combination is answered (200) or refused (400), never a 500.
_EDGE_FLOATS = st.sampled_from([0.0, 1e-300, 5e-324, 0.009, 0.01, 1.0, 1e300, 1.7976931348623157e308])
_FLOATS = st.one_of(_EDGE_FLOATS, st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3))
_INTS = st.one_of(
    st.integers(min_value=-2, max_value=3),
    st.sampled_from([MAX_SEED, MAX_SEED + 1, 2**63, 2**64, 2**70, -(2**63) - 1, 10**30]),
)
_OPTIONS = st.fixed_dictionaries(
    {
        "max_new_tokens": st.sampled_from([1, 2, 3, 2, 1, 3, 0, 10**30]),  # mostly ones the model then runs
        "do_sample": st.sampled_from([True, True, True, False]),  # sampling is where the divisors bite
        "temperature": _FLOATS,
        "repetition_penalty": _FLOATS,
    },
    optional={"min_new_tokens": _INTS, "top_p": _FLOATS, "seed": st.one_of(st.none(), _INTS)},
)


@settings(max_examples=80, derandomize=True, deadline=None)
@given(options=_OPTIONS)
def test_any_request_options_are_answered_or_refused_never_a_server_error(client, options: dict) -> None:
    body = _propose('{"task": "refer", "query": "the circle"}', json.dumps(options))  # writes Infinity, NaN
    response = _post(client, "/propose", body)
    assert response.status_code in (200, 400), (response.status_code, response.get_data(as_text=True)[:300])
    if response.status_code == 400:
        _assert_400(response)
        return
    ProposeAnswer.model_validate_json(response.get_data())
    GenerationOptions.model_validate(options)  # what the server accepted is what the model's options accept


def test_the_command_line_refuses_them_before_loading_the_model(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(_png())
    nowhere = str(tmp_path / "no-model")  # the model is never loaded: the arguments are refused first
    common = ["propose", str(image), "--model", nowhere, "--task", "refer"]
    # Before: one-line, but after loading the model and naming nothing: "Overflow when unpacking long long", and
    # "'utf-8' codec can't encode character '\udcff' ... surrogates not allowed".
    assert_one_line_error(run(*common, "--query", "a", "--seed", str(2**70)), "--seed", f"{MAX_SEED:,}")
    # An argument that is not UTF-8 (b"\xff") arrives as a lone surrogate.
    assert_one_line_error(run(*common, "--query", "the \udcff circle"), "--query", "lone surrogate", "UTF-8")
    assert_one_line_error(run("split", str(tmp_path / "x.json"), "--seed", "-1"), "--seed")
