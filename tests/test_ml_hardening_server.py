"""The backend's server under attack (issue 13: items 3, 6, 8, 17, and deep JSON from 18), with the shipped model.

The first tests run the README's production command itself, read from the README (loopback only, a free port, the
shipped model): slow clients must not starve it, a /predict whose client hung up must stop, and bodies over the
limits are refused. The rest drive the real Flask app in-process. Nothing here asserts a duration: waits end on
progress (a counter in /metrics, an answer), bounded by generous limits (patience.py).
"""

from __future__ import annotations

import base64
import gc
import json
import os
import re
import shlex
import socket
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from backend_process import running_backend
from hypothesis import given, settings
from hypothesis import strategies as st
from ls_harness import free_port
from patience import HANG_S

from label_studio_access.media import MediaFetcher, MediaSettings
from minigpt_annotate.cli import build_parser
from ml_backend.backend import TASKS_PER_CHUNK, MiniGPTBackend
from ml_backend.server import create_app, nests_deeper_than
from ml_backend.settings import BackendSettings, RequestLimits, ServerSettings, load_proposer
from model.errors import MiniGPTError
from model.synthetic.shapes import make_shapes
from model.synthetic.shapes_model import SHIPPED_DIR

README = Path(__file__).resolve().parents[1] / "README.md"
CONFIG = (
    '<View><Image name="image" value="$image"/><RectangleLabels name="label" toName="image">'
    '<Label value="square"/><Label value="circle"/><Label value="triangle"/></RectangleLabels></View>'
)
AUTH = ("labelstudio", "a-long-test-secret")
SLOW_SOCKETS = 50  # a fifth of MINIGPT_CONNECTION_LIMIT; gunicorn --threads 8 was stopped by 10
PATIENCE_S = HANG_S / 5  # how long an answer may take while the slow sockets trickle (it takes milliseconds)


# --- the documented production command, as a process ----------------------------------------------------------------
def documented_command() -> tuple[dict[str, str], list[str]]:
    """The environment and argv of the README's production command (the bash block after "**Production:**")."""
    text = README.read_text()
    section = text[text.index("**Production:**") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "README's Production section has no bash block"
    words = shlex.split(block.group(1).replace("\\\n", " "), comments=True)
    env = {}
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    return env, words


def _on_loopback(argv: list[str], port: int) -> list[str]:
    """The command as this test runs it: this interpreter, loopback instead of every interface, a free port."""
    program, *args = argv
    head = [sys.executable, "-m", "minigpt_annotate"] if program == "minigpt-annotate" else [
        str(Path(sys.executable).with_name(program))
    ]  # fmt: skip
    return head + [a.replace("0.0.0.0", "127.0.0.1").replace("9090", str(port)) for a in args]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("hardening-root")
    make_shapes(root, images=4, seed=13, max_shapes=1)
    return root, sorted(p.relative_to(root).as_posix() for p in (root / "images").iterdir())


@pytest.fixture(scope="module")
def production(images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The README's production command on loopback, with its documented environment (model and secret replaced)."""
    root, _ = images
    documented_env, argv = documented_command()
    port = free_port()
    env = {**os.environ, **documented_env, "LOCAL_FILES_DOCUMENT_ROOT": str(root), "MINIGPT_DEVICE": "cpu"}
    env.update(MINIGPT_MODEL=str(SHIPPED_DIR), BASIC_AUTH_USER=AUTH[0], BASIC_AUTH_PASS=AUTH[1])
    env.pop("LABEL_STUDIO_URL", None)
    log = tmp_path_factory.mktemp("production") / "server.log"
    with running_backend(_on_loopback(argv, port), port, log, env) as url:
        yield url, log


def _tasks(names: list[str], count: int) -> list[dict]:
    return [{"id": i, "data": {"image": f"/data/local-files/?d={names[i % len(names)]}"}} for i in range(1, count + 1)]


def _metrics(url: str) -> dict:
    return requests.get(f"{url}/metrics", auth=AUTH, timeout=PATIENCE_S).json()


def _wait_for(condition, what: str, limit: float = HANG_S):
    """Poll `condition` until it returns something truthy; fail after `limit` seconds (a hang, not slowness)."""
    deadline = time.monotonic() + limit
    while not (found := condition()):
        assert time.monotonic() < deadline, f"no {what} within {limit:.0f} s"
        time.sleep(0.2)
    return found


class SlowClients:
    """`count` sockets that each send a request one byte per round: half trickle headers that never end, half
    complete headers and then trickle a body that never ends. The attack lasts until `stop()`."""

    def __init__(self, port: int, count: int):
        self.port, self.count = port, count
        self.sockets: list[socket.socket] = []
        self.sent = [0] * count
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SlowClients:
        for _ in range(self.count):
            self.sockets.append(socket.create_connection(("127.0.0.1", self.port), timeout=PATIENCE_S))
        self._thread.start()
        return self

    def _payload(self, i: int) -> bytes:
        if i % 2:
            return b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100_000
        head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        return head + b"Content-Length: 1000000\r\n\r\n" + b'{"tasks": [' + b" " * 1_000_000

    def _run(self) -> None:
        payloads = [self._payload(i) for i in range(self.count)]
        while not self._stop.is_set():
            for i, sock in enumerate(self.sockets):
                if sock.fileno() < 0:
                    continue
                try:
                    sock.send(payloads[i][self.sent[i] : self.sent[i] + 1])
                    self.sent[i] += 1
                except OSError:  # the server closed it
                    sock.close()
                    self.closed_by_server += 1
            self._stop.wait(0.2)

    def established(self) -> bool:
        return min(self.sent) >= 10

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self.sockets:
            sock.close()


def test_the_documented_production_command_survives_slow_clients(production, images) -> None:
    """Item 3: 50 sockets trickling headers or bodies do not stop /health, nor an authenticated /predict."""
    url, _ = production
    _, names = images
    attack = SlowClients(int(url.rsplit(":", 1)[1]), SLOW_SOCKETS).start()
    try:
        _wait_for(attack.established, "slow sockets sending")
        started = time.monotonic()
        health = requests.get(f"{url}/health", timeout=PATIENCE_S)
        health_s = time.monotonic() - started
        started = time.monotonic()
        body = {"tasks": _tasks(names, 1), "label_config": CONFIG}
        predicted = requests.post(f"{url}/predict", json=body, auth=AUTH, timeout=PATIENCE_S)
        predict_s = time.monotonic() - started
        refused = requests.post(f"{url}/predict", json=body, timeout=PATIENCE_S)
        assert attack.closed_by_server == 0, "the slow sockets were dropped, so the attack was not in force"
    finally:
        attack.stop()
    print(f"{SLOW_SOCKETS} slow sockets: /health in {health_s:.3f} s, authenticated /predict in {predict_s:.3f} s")
    assert health.json()["status"] == "UP"
    assert predicted.status_code == 200 and len(predicted.json()["results"]) == 1
    assert refused.status_code == 401  # the documented command has basic auth on
    documented_env, _ = documented_command()
    assert documented_env.get("BASIC_AUTH_USER") and documented_env.get("BASIC_AUTH_PASS")


def test_a_predict_stops_when_its_client_disconnects(production, images) -> None:
    """Item 8: a client sends 320 tasks and hangs up once the first chunk has run; the server runs at most the
    chunk then under way and one more, counts the request as abandoned, and says so in its log."""
    url, log = production
    _, names = images
    total = 20 * TASKS_PER_CHUNK
    before = _metrics(url)
    body = json.dumps({"tasks": _tasks(names, total), "label_config": CONFIG}).encode()
    credentials = base64.b64encode(":".join(AUTH).encode()).decode()
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {credentials}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S) as client:
        client.sendall(head.encode() + body)
        seen = _wait_for(lambda: _metrics(url)["tasks"] - before["tasks"], "first chunk run")
    # the socket is closed: nobody will read the answer

    def settled() -> dict | None:
        now = _metrics(url)
        gone = now.get("abandoned_predicts", 0) > before.get("abandoned_predicts", 0)
        return now if gone or now["tasks"] - before["tasks"] >= total else None

    after = _wait_for(settled, "end of the abandoned /predict")
    run = after["tasks"] - before["tasks"]
    print(f"client left after {seen} of {total} tasks had run; the server ran {run} in all")
    assert after.get("abandoned_predicts", 0) == before.get("abandoned_predicts", 0) + 1
    assert run <= seen + 2 * TASKS_PER_CHUNK < total, f"ran {run} of {total} tasks after the client left at {seen}"
    assert after["predict_calls"] == before["predict_calls"]  # not counted as answered
    assert re.search(rf"client disconnected after \d+ of {total} task", log.read_text())


def test_bodies_over_the_limits_are_refused_with_the_setting_named(production) -> None:
    """Item 6 through the real server: a body over a route's limit is a 413 naming its setting; one declaring more
    than any route takes is refused before it is sent; JSON nested 100,000 deep is a 400."""
    url, _ = production
    port = int(url.rsplit(":", 1)[1])
    over_setup = b'{"schema": "' + b"x" * (RequestLimits().setup_bytes + 1) + b'"}'
    refused = requests.post(
        f"{url}/setup", data=over_setup, auth=AUTH, headers={"Content-Type": "application/json"}, timeout=PATIENCE_S
    )
    assert refused.status_code == 413
    assert "MINIGPT_MAX_SETUP_BYTES" in refused.json()["error"]

    # 100 MB declared, nothing sent: the server answers from the headers alone, in the app's words
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S) as client:
        client.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000000\r\n\r\n"
        )
        answer = b""
        while chunk := client.recv(4096):  # the server closes the connection after a refusal
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    error = json.loads(body)["error"]
    assert "100,000,000 bytes" in error and "MINIGPT_MAX_PREDICT_BYTES" in error and "\n" not in error

    deep = requests.post(
        f"{url}/predict", data="[" * 100_000 + "]" * 100_000, auth=AUTH, timeout=PATIENCE_S,
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert deep.status_code == 400 and "nests JSON more than 100 levels deep" in deep.json()["error"]


# --- the Flask app in-process ----------------------------------------------------------------------------------------
def _app(root: Path, limits: RequestLimits | None = None, **backend_kwargs: object):
    fetcher = MediaFetcher(MediaSettings(label_studio_url=None, api_key=None, local_files_root=root))
    backend = MiniGPTBackend(load_proposer(str(SHIPPED_DIR), "cpu"), fetcher, **backend_kwargs)
    return backend, create_app(backend, limits=limits).test_client()


SMALL = RequestLimits(predict_bytes=4096, webhook_bytes=2048, setup_bytes=1024, predict_tasks=3)


@pytest.mark.parametrize(
    ("path", "setting"),
    [
        ("/predict", "MINIGPT_MAX_PREDICT_BYTES"),
        ("/webhook", "MINIGPT_MAX_WEBHOOK_BYTES"),
        ("/setup", "MINIGPT_MAX_SETUP_BYTES"),
    ],
)
def test_each_route_refuses_a_body_over_its_limit_naming_the_setting(images, path: str, setting: str) -> None:
    root, _ = images
    _, client = _app(root, SMALL)
    limit, named = SMALL.body_limit(path)
    assert named == setting
    body = b'{"action": "ANNOTATION_CREATED", "padding": "' + b"x" * limit + b'"}'
    refused = client.post(path, data=body, content_type="application/json")
    assert refused.status_code == 413
    error = refused.get_json()["error"]
    assert setting in error and f"{limit:,}" in error and "\n" not in error
    # without a Content-Length (a chunked body), the stream is read no further than the limit
    stream = _Unsized(body + b" " * 1_000_000)
    environ = {"wsgi.input": stream, "wsgi.input_terminated": True, "CONTENT_LENGTH": ""}
    chunked = client.post(path, environ_overrides=environ, content_type="application/json")
    assert chunked.status_code == 413 and setting in chunked.get_json()["error"]
    assert stream.read_bytes <= limit + 1


class _Unsized:
    """A request body that declares no length, as a chunked upload does; it counts what the server read."""

    def __init__(self, data: bytes):
        self._data, self.read_bytes = data, 0

    def read(self, size: int = -1) -> bytes:
        size = len(self._data) - self.read_bytes if size is None or size < 0 else size
        out = self._data[self.read_bytes : self.read_bytes + size]
        self.read_bytes += len(out)
        return out


def test_a_predict_over_the_task_cap_is_refused_before_any_task_runs(images) -> None:
    """Item 8: Label Studio sends every selected task in one /predict; over MINIGPT_MAX_PREDICT_TASKS it is refused
    whole (Label Studio then stores nothing, and selecting fewer tasks works), rather than answered in part."""
    root, names = images
    backend, client = _app(root, SMALL)
    refused = client.post("/predict", json={"tasks": _tasks(names, 4), "label_config": CONFIG})
    assert refused.status_code == 413
    assert "MINIGPT_MAX_PREDICT_TASKS" in refused.get_json()["error"] and "4 tasks" in refused.get_json()["error"]
    assert backend.metrics.tasks == 0
    served = client.post("/predict", json={"tasks": _tasks(names, 3), "label_config": CONFIG})
    assert served.status_code == 200 and len(served.get_json()["results"]) == 3


JSON_ROUTES = {
    "/predict": '{"tasks": [{"id": 1, "data": {"image": DEEP}}], "label_config": CONFIG}',
    "/webhook": '{"action": "ANNOTATION_CREATED", "annotation": {"id": 1, "result": DEEP}}',
    "/setup": '{"project": "7", "schema": DEEP}',
    "/propose": '{"image": DEEP, "prompts": [{"task": "detection", "text": "square"}]}',
}


def _nested(depth: int, opener: str) -> str:
    """A JSON value `depth` levels deep: arrays, or objects."""
    if opener == "[":
        return "[" * depth + "1" + "]" * depth
    return '{"k":' * depth + "1" + "}" * depth


def _body(path: str, deep: str, whole: bool) -> str:
    return deep if whole else JSON_ROUTES[path].replace("CONFIG", json.dumps(CONFIG)).replace("DEEP", deep)


@pytest.fixture(scope="module")
def app_client(images):
    root, _ = images
    return _app(root)[1]


@pytest.mark.parametrize("depth", [1000, 100_000])
@pytest.mark.parametrize("path", sorted(JSON_ROUTES))
def test_deeply_nested_json_is_a_400_on_every_json_route(app_client, path: str, depth: int) -> None:
    """Item 18: JSON nested 1,000 or 100,000 deep was a RecursionError, a 500; now a 400 with a one-line cause."""
    for whole in (True, False):
        answer = app_client.post(path, data=_body(path, _nested(depth, "["), whole), content_type="application/json")
        assert answer.status_code == 400, (path, depth, whole, answer.status_code)
        error = answer.get_json()["error"]
        assert "nests JSON more than 100 levels deep" in error and "\n" not in error


@settings(max_examples=80, derandomize=True)
@given(
    path=st.sampled_from(sorted(JSON_ROUTES)),
    depth=st.integers(1, 3000),
    opener=st.sampled_from(["[", "{"]),
    whole=st.booleans(),
)
def test_nesting_fuzz_never_gives_a_server_error(app_client, path: str, depth: int, opener: str, whole: bool) -> None:
    """Any depth, of arrays or objects, alone or inside a route's payload: a 4xx or an answer, never a 500."""
    answer = app_client.post(path, data=_body(path, _nested(depth, opener), whole), content_type="application/json")
    assert answer.status_code < 500, (path, depth, opener, whole, answer.get_data(as_text=True)[:300])
    if answer.status_code >= 400:
        assert "\n" not in answer.get_json()["error"]


def test_setup_remembers_a_bounded_number_of_projects(images) -> None:
    """Item 17: 150 projects' configs (256 KB each) from /setup: only the most recent MINIGPT_MAX_PROJECTS stay, and
    the Python heap keeps far less than all 150; a recent project is still served from its remembered config, the
    oldest is asked for its config."""
    root, names = images
    backend, client = _app(root)  # the default limit
    limit, projects, size = RequestLimits().projects, 150, 256_000
    gc.collect()
    tracemalloc.start()
    try:
        for project in range(1, projects + 1):
            padded = CONFIG.replace("</View>", f"<!-- project {project} {'x' * size} --></View>")
            assert client.post("/setup", json={"project": str(project), "schema": padded}).status_code == 200
        gc.collect()
        kept, _ = tracemalloc.get_traced_memory()  # what was allocated since start and is still alive
    finally:
        tracemalloc.stop()
    assert kept < projects * size / 2, f"{kept / 1e6:.1f} MB kept after {projects} configs of {size / 1e6} MB"
    assert backend.projects_remembered == limit < projects
    assert client.get("/metrics").get_json()["projects_remembered"] == limit
    recent = client.post("/predict", json={"tasks": _tasks(names, 1), "project": f"{projects}.1700000000"})
    assert recent.status_code == 200 and len(recent.get_json()["results"]) == 1
    oldest = client.post("/predict", json={"tasks": _tasks(names, 1), "project": "1.1700000000"})
    assert oldest.status_code == 422 and "/setup was not called" in oldest.get_json()["error"]


def test_limits_and_server_settings_from_the_environment_name_the_bad_variable() -> None:
    limits = RequestLimits.from_env({"MINIGPT_MAX_PREDICT_TASKS": "50", "MINIGPT_MAX_PROJECTS": "4"})
    assert (limits.predict_tasks, limits.projects) == (50, 4)
    assert ServerSettings.from_env({"MINIGPT_CONNECTION_LIMIT": "512"}).connection_limit == 512
    with pytest.raises(MiniGPTError, match="MINIGPT_MAX_PREDICT_BYTES"):
        RequestLimits.from_env({"MINIGPT_MAX_PREDICT_BYTES": "lots"})
    with pytest.raises(MiniGPTError, match="MINIGPT_THREADS"):
        ServerSettings.from_env({"MINIGPT_THREADS": "0"})


def test_serve_takes_device_and_dtype_from_the_environment_unless_flags_say_otherwise() -> None:
    """The production command is configured by the environment: `serve`'s flags must not override MINIGPT_DEVICE
    and MINIGPT_DTYPE with their defaults (they did: "auto" always won)."""
    env = {"MINIGPT_MODEL": "m", "MINIGPT_DEVICE": "cpu", "MINIGPT_DTYPE": "float32"}
    plain = build_parser().parse_args(["serve"])
    settings_ = BackendSettings.from_env(env, device=plain.device, dtype=plain.dtype)
    assert (settings_.device, settings_.dtype) == ("cpu", "float32")
    flagged = build_parser().parse_args(["serve", "--device", "cuda:1"])
    assert BackendSettings.from_env(env, device=flagged.device).device == "cuda:1"


def _depth(value: object) -> int:
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    return 0


_TRICKY_TEXT = st.text(alphabet='[]{}"\\ab,:', max_size=12)  # brackets, quotes and escapes inside strings
_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | _TRICKY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TRICKY_TEXT, inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=300, derandomize=True)
@given(value=_JSON_VALUES, limit=st.integers(0, 8), indent=st.sampled_from([None, 1]))
def test_the_depth_check_agrees_with_the_parsed_depth(value: object, limit: int, indent: int | None) -> None:
    """The scan that refuses deep bodies before parsing counts what the parser would nest, whatever the strings
    hold (brackets, quotes, escaped quotes and backslashes) and however the text is laid out."""
    text = json.dumps(value, indent=indent, ensure_ascii=False).encode()
    assert nests_deeper_than(text, limit) == (_depth(value) > limit)
