"""The desktop app's model sources: the shipped tiny shapes model in this process, and the same model behind a real
`minigpt-annotate serve` (with basic auth) reached through `POST /propose`. No mocks: real files, real model, HTTP.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from backend_process import running_backend, serve_command
from ls_harness import free_port
from patience import HANG_MS, HANG_S
from PIL import Image
from pydantic import ValidationError
from pytestqt.qtbot import QtBot
from same_answers import assert_same_proposals

from annotator.core import engines
from annotator.core.engines import (
    MAX_UPLOAD_SIDE,
    Cancelled,
    EngineError,
    EngineRequest,
    ImageOutcome,
    LocalEngine,
    RemoteEngine,
)
from ml_backend import server
from model import propose_api
from model.annotations import Box, ImageRecord, Task
from model.coco import read_coco
from model.errors import ImageLoadError
from model.images import load_image
from model.proposer import GenerationOptions, ProposalResult
from model.request import Prompt
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR

AUTH = ("labeller", "s3cret")
CATEGORIES = ("circle", "square", "triangle")
LARGE_SCALE = 7  # the large image is a shapes scene enlarged 7x (about 2000 px), stored rotated with EXIF 6


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, ImageRecord]:
    """Four scenes (seed 5: one PNG, two JPEGs with EXIF 6, one with EXIF 3) and one large EXIF-rotated JPEG,
    each with its ground-truth record (upright size and boxes)."""
    root = tmp_path_factory.mktemp("engine-shapes")
    dataset = read_coco(make_shapes(root, images=4, seed=5, max_shapes=2, exif_fraction=0.5))
    records = {r.path: r for r in dataset.images}
    assert {Image.open(p).getexif().get(0x0112) for p in records} >= {None, 3, 6}

    source = next(p for p in records if Image.open(p).getexif().get(0x0112) == 6)
    record = records[source]
    upright = load_image(source).image
    large = upright.resize((upright.width * LARGE_SCALE, upright.height * LARGE_SCALE), Image.Resampling.BICUBIC)
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer rotates 90° clockwise: store the upright image turned the other way
    path = root / "large.jpg"
    large.transpose(Image.Transpose.ROTATE_90).save(path, quality=92, exif=exif.tobytes())
    scaled = [
        a.model_copy(update={"box": Box.from_xyxy([v * LARGE_SCALE for v in a.box.xyxy])}) for a in record.annotations
    ]
    records[path] = record.model_copy(
        update={"path": path, "width": large.width, "height": large.height, "annotations": scaled}
    )
    assert (load_image(path).width, load_image(path).height) == large.size
    assert max(large.size) > MAX_UPLOAD_SIDE  # so the remote engine downscales it
    return records


@pytest.fixture(scope="module")
def local() -> LocalEngine:
    return LocalEngine.load(SHIPPED_DIR, device="cpu")


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "BASIC_AUTH_USER": AUTH[0], "BASIC_AUTH_PASS": AUTH[1]}
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with running_backend(serve_command(port), port, log, env) as url:
        yield url


@pytest.fixture(scope="module")
def remote(server_url: str) -> Iterator[RemoteEngine]:
    engine = RemoteEngine.connect(server_url, auth=AUTH, timeout=HANG_S)
    yield engine
    engine.close()


def _requests(records: dict) -> list[EngineRequest]:
    """What a labeller asks per image: every category, the first shape's phrase, and [identify] on its box."""
    out = []
    for path, record in records.items():
        out += [EngineRequest(path, Prompt(Task.detection, name)) for name in CATEGORIES]
        first = record.annotations[0]
        out.append(EngineRequest(path, Prompt(Task.refer, first.phrase)))
        out.append(EngineRequest(path, Prompt(Task.identify, None, first.box)))
    return out


def _png(tmp_path: Path, name: str = "tiny.png") -> bytes:
    path = tmp_path / name
    Image.new("RGB", (40, 30), (200, 30, 30)).save(path)
    return path.read_bytes()


def test_the_remote_engine_gives_the_local_engines_boxes(local: LocalEngine, remote: RemoteEngine, shapes) -> None:
    requests_ = _requests(shapes)
    progress: list[tuple[int, int]] = []
    here = local.propose(requests_)
    there = remote.propose(requests_, on_progress=lambda done, total: progress.append((done, total)))
    assert progress == [(5 * n, len(requests_)) for n in range(1, len(shapes) + 1)]  # after each image

    assert local.description == "local model tiny-shapes on cpu"
    assert remote.description == f"server {remote.url} (model tiny-shapes)"
    found = 0
    for request, mine, theirs in zip(requests_, here, there, strict=True):
        record = shapes[request.image]
        assert isinstance(theirs, ProposalResult)
        assert theirs.image == mine.image == str(request.image)
        assert (theirs.width, theirs.height) == (mine.width, mine.height) == (record.width, record.height)  # upright
        # the same instruction, [identify]'s grid included: the box scaled down for upload lands in the same cells
        assert (theirs.task, theirs.query, theirs.prompt) == (mine.task, mine.query, mine.prompt)
        if request.image.name != "large.jpg":
            # sent as is: the server decodes the very same pixels (scores within the drift between two processes)
            assert_same_proposals(theirs, mine)
            continue
        # Downscaled to 1344 px for upload: the same answers, boxes within one cell of the 0-100 grid.
        assert [p.label for p in theirs.proposals] == [p.label for p in mine.proposals], (mine.text, theirs.text)
        for a, b in zip(mine.proposals, theirs.proposals, strict=True):
            tolerance = (record.width / 100, record.height / 100) * 2
            assert all(abs(u - v) <= t + 1e-6 for u, v, t in zip(a.box.xyxy, b.box.xyxy, tolerance, strict=True))
            assert b.model_version == "tiny-shapes" and b.prompt == a.prompt and b.task is a.task
        found += len(mine.proposals)
    assert sum(len(r.proposals) for r in here) >= len(shapes)  # the comparison is about real boxes
    assert found >= 1


@pytest.mark.parametrize("kind", ["local", "remote"])
def test_cancel_stops_between_images_after_delivering_the_earlier_ones(kind: str, request, shapes) -> None:
    engine = request.getfixturevalue(kind)
    paths = list(shapes)[:3]
    requests_ = [EngineRequest(p, Prompt(Task.detection, name)) for p in paths for name in CATEGORIES]

    delivered: list[ImageOutcome] = []
    with pytest.raises(Cancelled, match="stopped after 1 of 3 images"):
        for outcome in engine.propose_each(requests_, should_stop=lambda: len(delivered) >= 1):
            delivered.append(outcome)
    assert [o.indices for o in delivered] == [[0, 1, 2]]
    assert delivered[0].error is None and [r.image for r in delivered[0].results] == [str(paths[0])] * 3

    progress: list[tuple[int, int]] = []
    with pytest.raises(Cancelled) as stopped:
        engine.propose(requests_, on_progress=lambda d, t: progress.append((d, t)), should_stop=lambda: bool(progress))
    assert progress == [(3, 9)]
    assert [r is not None for r in stopped.value.results] == [True] * 3 + [False] * 6
    assert stopped.value.results[:3] == delivered[0].results  # the same answers, delivered before the stop


@pytest.mark.parametrize("kind", ["local", "remote"])
def test_a_corrupt_image_fails_alone_and_the_next_images_run(kind: str, request, shapes, tmp_path: Path) -> None:
    engine = request.getfixturevalue(kind)
    good = list(shapes)[:2]
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(good[1].read_bytes()[:400])  # a JPEG cut off by an interrupted copy
    paths = [good[0], corrupt, tmp_path / "missing.png", good[1]]
    requests_ = [EngineRequest(p, Prompt(Task.detection, "circle")) for p in paths]

    outcomes = list(engine.propose_each(requests_))
    assert [o.indices for o in outcomes] == [[0], [1], [2], [3]]
    assert outcomes[0].error is None and outcomes[3].error is None
    assert isinstance(outcomes[1].error, ImageLoadError) and str(corrupt) in str(outcomes[1].error)
    assert "truncated" in str(outcomes[1].error)
    assert isinstance(outcomes[2].error, ImageLoadError) and "file not found" in str(outcomes[2].error)
    assert outcomes[3].results == engine.propose([requests_[3]])  # unaffected by the failures before it

    with pytest.raises(ImageLoadError, match="truncated"):
        engine.propose(requests_)  # the all-or-nothing form raises the first per-image error


def test_more_prompts_than_one_call_takes_and_generation_options(server_url: str, local: LocalEngine, shapes) -> None:
    options = GenerationOptions(max_new_tokens=12)
    path = next(iter(shapes))
    phrases = [a.phrase for a in shapes[path].annotations] * 40
    requests_ = [EngineRequest(str(path), Prompt("refer", phrase)) for phrase in phrases[: propose_api.MAX_PROMPTS + 6]]
    remote = RemoteEngine(server_url.removeprefix("http://"), auth=AUTH, options=options)  # two /propose calls
    there = remote.propose(requests_)
    here = LocalEngine(local.proposer, options=options).propose(requests_)
    assert len(there) == propose_api.MAX_PROMPTS + 6
    assert_same_proposals(there, here)  # split 64 + 6 there, one call here: batches differ, scores may drift


def test_client_and_server_speak_one_propose_contract(server_url: str, tmp_path: Path) -> None:
    # Limits and schemas are not copies that could drift apart: both sides take them from model.propose_api.
    for name in ("ProposeBody", "ProposeAnswer"):
        assert getattr(server, name, None) is getattr(engines, name, None) is getattr(propose_api, name)
    # The body the client builds is the one the server validates: a real serve takes MAX_PROMPTS prompts, in order...
    options = propose_api.ProposeOptions.of(GenerationOptions(max_new_tokens=2))
    prompts = [Prompt(Task.caption), Prompt(Task.identify, box=[2, 3, 20, 25])] * (propose_api.MAX_PROMPTS // 2)
    body = propose_api.ProposeBody(image=_png(tmp_path), prompts=prompts, options=options)
    response = requests.post(
        server_url + propose_api.PATH,
        data=body.to_json(),
        headers={"Content-Type": "application/json"},
        auth=AUTH,
        timeout=HANG_S,
    )
    assert response.status_code == 200, response.text
    answer = propose_api.ProposeAnswer.model_validate_json(response.content)
    assert [r.task for r in answer.results] == [p.task for p in prompts]
    assert answer.model_version == "tiny-shapes"
    # ...and one prompt more is refused before anything is sent, by the same limit the server checks.
    with pytest.raises(ValidationError, match="at most 64 items"):
        propose_api.ProposeBody(image=b"x", prompts=[*prompts, Prompt(Task.caption)])


def test_a_client_cannot_make_the_server_compile(server_url: str, tmp_path: Path) -> None:
    body = {"image": base64.b64encode(_png(tmp_path)).decode(), "prompts": [{"task": "caption"}]}
    for cache in ("compiled", "static", "dynamic"):
        response = requests.post(
            server_url + propose_api.PATH, json={**body, "options": {"cache": cache}}, auth=AUTH, timeout=HANG_S
        )
        assert response.status_code == 400 and "chosen by the server" in response.json()["error"], response.text
    with pytest.raises(ValidationError, match="chosen by the server"):  # the desktop's client refuses it first
        propose_api.ProposeOptions.of(GenerationOptions(cache="compiled"))


def test_connecting_fails_with_the_url_the_cause_and_the_fix(server_url: str) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(EngineError) as unreachable:
        RemoteEngine.connect(nobody)
    assert nobody in str(unreachable.value) and "refused" in str(unreachable.value)
    assert "`minigpt-annotate serve` is running" in str(unreachable.value)

    with pytest.raises(EngineError, match=r"refused the request \(401 unauthorized\): set the user/password"):
        RemoteEngine.connect(server_url)
    with pytest.raises(EngineError, match="check the user and password"):
        RemoteEngine.connect(server_url, auth=(AUTH[0], "wrong"))

    class NotOurs(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>Welcome to nginx</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotOurs)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{other.server_port}"
        with pytest.raises(EngineError, match=rf"{url} is not a minigpt-annotate server .*200, not JSON"):
            RemoteEngine.connect(url)
    finally:
        other.shutdown()
        other.server_close()


def test_propose_answers_the_documented_contract(server_url: str, tmp_path: Path) -> None:
    image = base64.b64encode(_png(tmp_path)).decode()
    body = {
        "image": image,
        "prompts": [
            {"task": "detection", "query": "circle", "box": None},
            {"task": "identify", "box": [2, 3, 20, 25]},
        ],
        "options": {"max_new_tokens": 30},
    }
    response = requests.post(f"{server_url}/propose", json=body, auth=AUTH, timeout=HANG_S)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_version"] == "tiny-shapes"
    results = [ProposalResult.model_validate(r) for r in answer["results"]]
    assert [(r.task, r.width, r.height, r.image) for r in results] == [
        (Task.detection, 40, 30, "<bytes>"),
        (Task.identify, 40, 30, "<bytes>"),
    ]
    assert results[1].prompt.startswith("[identify]") and "{<5><10><50><83>}" in results[1].prompt
    assert requests.post(f"{server_url}/propose", json=body, timeout=HANG_S).status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("not json", "must be a JSON object"),
        ({}, "image: Field required; prompts: Field required"),
        ({"image": "@@@", "prompts": [{"task": "caption"}]}, "image: not valid base64"),
        ({"image": "IMG", "prompts": []}, "prompts: List should have at least 1 item"),
        ({"image": "IMG", "prompts": [{"task": "caption"}] * 65}, "prompts: List should have at most 64 items"),
        ({"image": "IMG", "prompts": [{"task": "find"}]}, "prompts.0.task: Input should be 'detection'"),
        ({"image": "IMG", "prompts": [{"task": "identify", "box": [1, 2, 3]}]}, "expected [x0, y0, x1, y1]"),
        ({"image": "IMG", "prompts": [{"task": "identify", "box": [5, 2, 3, 9]}]}, "box must have x0 < x1"),
        ({"image": "IMG", "prompts": [{"task": "refer", "querry": "x"}]}, "prompts.0.querry: Unexpected keyword"),
        ({"image": "IMG", "prompts": [{"task": "caption"}], "options": {"temprature": 1}}, "options.temprature"),
        ({"image": "IMG", "prompts": [{"task": "caption"}], "options": {"max_new_tokens": 0}}, "max_new_tokens"),
        ({"image": "IMG", "prompts": [{"task": "detection", "query": "a", "box": [1, 2, 3, 4]}]}, "only task identify"),
        ({"image": "IMG", "prompts": [{"task": "detection"}]}, "task detection needs a query"),
    ],
)
def test_propose_refuses_bad_bodies_with_400(server_url: str, tmp_path: Path, body: object, message: str) -> None:
    if isinstance(body, dict) and body.get("image") == "IMG":
        body = {**body, "image": base64.b64encode(_png(tmp_path)).decode()}
    kwargs = {"json": body} if isinstance(body, dict) else {"data": body}
    response = requests.post(f"{server_url}/propose", auth=AUTH, timeout=HANG_S, **kwargs)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_propose_gives_422_for_undecodable_image_bytes(server_url: str, shapes) -> None:
    cut = next(iter(shapes)).read_bytes()[:300]  # a PNG cut off mid-data
    for data, cause in ((cut, "truncated"), (b"<html>login</html>", "not an image, it contains an HTML page")):
        body = {"image": base64.b64encode(data).decode(), "prompts": [{"task": "caption"}]}
        response = requests.post(f"{server_url}/propose", json=body, auth=AUTH, timeout=HANG_S)
        assert response.status_code == 422, response.text
        assert response.json()["error"].startswith("cannot read image '<bytes>':") and cause in response.text


def test_propose_refuses_an_oversized_body_before_reading_it(server_url: str) -> None:
    host, port = server_url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=HANG_S)
    try:
        connection.putrequest("POST", "/propose")
        credentials = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
        connection.putheader("Authorization", f"Basic {credentials}")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(propose_api.MAX_BODY_BYTES + 1))
        connection.endheaders()  # the body is never sent: the server must answer from the header alone
        response = connection.getresponse()
        assert response.status == 413
        assert b"67,108,865 bytes, more than the 67,108,864 bytes /propose accepts" in response.read()
    finally:
        connection.close()


def test_engine_requests_accept_plain_strings(tmp_path: Path) -> None:
    request = EngineRequest(str(tmp_path / "a.jpg"), Prompt("refer", "the dog"))  # type: ignore[arg-type]
    assert request.image == tmp_path / "a.jpg" and request.prompt.task is Task.refer


def test_the_window_uses_a_remote_server_like_a_local_model(
    qtbot: QtBot,
    server_url: str,
    shapes: dict[Path, ImageRecord],
    local: LocalEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Model menu → server: the labeller's window runs [detection] on the GPU box and gets the local model's boxes."""
    from annotator.core.merging import proposal_rows
    from annotator.core.sources import ModelSource
    from annotator.gui.main_window import MainWindow

    folder = next(iter(shapes)).parent
    monkeypatch.setenv("MINIGPT_SERVER_USER", AUTH[0])
    monkeypatch.setenv("MINIGPT_SERVER_PASSWORD", AUTH[1])
    win = MainWindow()
    qtbot.addWidget(win)
    win.open_folder(folder, tmp_path / "remote.minigpt.sqlite")
    win.load_model(ModelSource("server", server_url))
    assert win.ai is not None and win.session is not None
    qtbot.waitUntil(lambda: not win.ai.busy, timeout=HANG_MS)
    assert win.model_status.text().startswith(f"Ready: server {server_url}")
    image = win.session.current_id
    assert image is not None
    path = win.session.path_of(win.session.image(image))
    win.ai_panel.query.setText(", ".join(CATEGORIES))
    win.run_model()
    qtbot.waitUntil(lambda: not win.ai.busy, timeout=HANG_MS)
    remote_boxes = sorted((r.label, r.box.xyxy) for r in win.session.boxes(image))
    expected = local.propose([EngineRequest(path, Prompt(Task.detection, name)) for name in CATEGORIES])
    rows: list = []
    for name, result in zip(CATEGORIES, expected, strict=True):  # merged the way the window merges
        rows += proposal_rows(result.proposals, image, rows, label=name)
    local_boxes = sorted((r.label, r.box.xyxy) for r in rows)
    assert [label for label, _ in remote_boxes] == [label for label, _ in local_boxes]
    for (_, a), (_, b) in zip(remote_boxes, local_boxes, strict=True):
        assert a == pytest.approx(b, abs=0.01)
    win.close()


def test_a_local_model_stops_mid_generation_and_drops_the_partial_answer(
    local: LocalEngine, shapes: dict[Path, ImageRecord]
) -> None:
    path = next(iter(shapes))
    polls: list[int] = []

    def stop_on_the_first_token() -> bool:
        polls.append(1)
        return len(polls) > 1  # the first call is the check before the image, then one per generated token

    with pytest.raises(Cancelled) as stopped:
        local.propose([EngineRequest(path, Prompt(Task.detection, "circle"))], should_stop=stop_on_the_first_token)
    assert stopped.value.results == [None]  # nothing half-done comes back
    assert len(polls) == 2
