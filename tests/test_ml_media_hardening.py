"""label_studio_access.media under attack (issue 13 items 4, 9, 13, 14, 15), against real servers on loopback.

Slow servers are raw sockets that drip bytes on a schedule; each test bounds the fetch by the progress the server made
(how many bytes or hops it had served when the fetch gave up), never by a wall-clock assertion.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import socket
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, unquote_plus

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from patience import HANG_S

from label_studio_access.downloads import ByteBudget
from label_studio_access.media import MediaError, MediaFetcher, MediaSettings
from label_studio_access.redaction import redact_text, redact_url

MB = 2**20
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@dataclass
class Served:
    """What a raw server did: requests it saw (request line + headers) and bytes it sent after the head."""

    requests: list[str] = field(default_factory=list)
    body_bytes: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def sent(self, count: int) -> None:
        with self.lock:
            self.body_bytes += count


Handler = Callable[[socket.socket, str, threading.Event, Served], "bool | None"]  # True: keep the connection open


class RawServer:
    """A TCP server on 127.0.0.1: each connection's request head goes to ``handler`` in a thread of its own."""

    def __init__(self, handler: Handler) -> None:
        self.served = Served()
        self.stop = threading.Event()
        self._handler = handler
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(32)
        self._sock.settimeout(0.05)
        self.port = self._sock.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(HANG_S)
            buffered = b""
            try:
                while True:  # keep-alive: requests on one connection until a handler returns no True, or EOF
                    while b"\r\n\r\n" not in buffered:
                        chunk = conn.recv(4096)
                        if not chunk:
                            return
                        buffered += chunk
                    head, _, buffered = buffered.partition(b"\r\n\r\n")
                    text = head.decode("latin-1")
                    with self.served.lock:
                        self.served.requests.append(text)
                    if not self._handler(conn, text, self.stop, self.served):
                        return
            except OSError:
                pass  # the client hung up: that is what a deadline does

    def close(self) -> None:
        self.stop.set()
        self._thread.join(HANG_S)
        self._sock.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[Handler], RawServer]]:
    servers: list[RawServer] = []

    def start(handler: Handler) -> RawServer:
        servers.append(RawServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def path_of(head: str) -> str:
    return head.split(" ", 2)[1]


def authorization_of(head: str) -> str | None:
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "authorization":
            return value.strip()
    return None


def fetcher_for(server: RawServer, **overrides: object) -> MediaFetcher:
    values: dict[str, object] = {"allowed_hosts": {server.host}, "timeout_s": 2.0}
    return MediaFetcher(MediaSettings(**(values | overrides)))


def one_line_error(call: Callable[[], object]) -> str:
    with pytest.raises(MediaError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --- item 4: MINIGPT_FETCH_TIMEOUT is a total deadline per download ---------------------------------------------------

DRIP_BYTES = 600  # at one byte per 50 ms the drip takes 30 s; the deadline is 2 s


def drip_body(conn: socket.socket, head: str, stop: threading.Event, served: Served) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % DRIP_BYTES)
    for _ in range(DRIP_BYTES):
        if stop.wait(0.05):
            return
        conn.sendall(b"x")
        served.sent(1)


def drip_headers(conn: socket.socket, head: str, stop: threading.Event, served: Served) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Pad: ")
    for _ in range(DRIP_BYTES):
        if stop.wait(0.05):
            return
        conn.sendall(b"a")
        served.sent(1)
    conn.sendall(b"\r\nContent-Type: image/png\r\nContent-Length: 3\r\n\r\nabc")


@pytest.mark.parametrize("handler", [drip_body, drip_headers], ids=["body", "headers"])
def test_a_dripping_server_hits_the_total_deadline(raw_server, handler: Handler) -> None:
    # Each byte arrives well within the 2 s, so a per-read timeout never fires: the drip took 43 s in the attack.
    server = raw_server(handler)
    message = one_line_error(lambda: fetcher_for(server).fetch(f"{server.url}/drip.png"))
    with server.served.lock:
        progress = server.served.body_bytes
    assert progress < DRIP_BYTES, "the fetch waited for the whole drip"
    assert "within 2 s" in message and "MINIGPT_FETCH_TIMEOUT" in message


def test_the_deadline_covers_all_redirect_hops(raw_server) -> None:
    hops = 6  # each hop answers after 1 s: every read is quick, the chain is not

    def slow_hop(conn: socket.socket, head: str, stop: threading.Event, served: Served) -> bool:
        number = int(path_of(head).rsplit("/", 1)[1])
        if stop.wait(1.0):
            return False
        if number < hops:
            conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /hop/%d\r\nContent-Length: 0\r\n\r\n" % (number + 1))
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(PNG) + PNG)
        return True

    server = raw_server(slow_hop)
    message = one_line_error(lambda: fetcher_for(server).fetch(f"{server.url}/hop/1"))
    assert len(server.served.requests) < hops, "the fetch followed the whole chain"
    assert "within 2 s" in message


def test_a_quick_chain_within_the_deadline_still_works(raw_server) -> None:
    def quick(conn: socket.socket, head: str, stop: threading.Event, served: Served) -> bool:
        if path_of(head) == "/start":
            conn.sendall(b"HTTP/1.1 301 Moved\r\nLocation: /img.png\r\nContent-Length: 0\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(PNG) + PNG)
        return True

    server = raw_server(quick)
    fetcher = fetcher_for(server)
    for _ in range(3):  # keep-alive connections are reused across downloads: a spent deadline must not follow them
        assert fetcher.fetch(f"{server.url}/start") == PNG


# --- item 9: the bytes concurrent downloads hold are bounded per process ---------------------------------------------

IMAGE_BYTES = 3 * MB
BODY = os.urandom(IMAGE_BYTES)
BUDGET = 4 * MB
CAP = 3 * MB + MB // 2
CLIENTS = 8


def test_concurrent_downloads_hold_at_most_the_budget(raw_server) -> None:
    # Every connection sends half its image, then waits (up to 2 s) until all of them have: without a shared budget
    # all 8 downloads are half-buffered at once (12 MB, and 8 x 3 MB + copies by the end); with it, one at a time.
    midway = threading.Barrier(CLIENTS, timeout=2)

    def half_then_rest(conn: socket.socket, head: str, stop: threading.Event, served: Served) -> None:
        sized = path_of(head) == "/sized.bin"
        length = b"Content-Length: %d\r\n" % len(BODY) if sized else b"Connection: close\r\n"
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n" + length + b"\r\n")
        view = memoryview(BODY)  # slices of a view copy nothing: the server adds no traced memory
        conn.sendall(view[: len(BODY) // 2])
        with contextlib.suppress(threading.BrokenBarrierError):
            midway.wait()
        conn.sendall(view[len(BODY) // 2 :])

    server = raw_server(half_then_rest)
    fetcher = fetcher_for(server, max_bytes=CAP, budget_bytes=BUDGET, timeout_s=HANG_S)
    correct: list[bool] = []
    start = threading.Barrier(CLIENTS)

    def client(index: int) -> None:
        start.wait()
        data = fetcher.fetch(f"{server.url}/{'sized' if index % 2 else 'chunked'}.bin")
        correct.append(data == BODY)  # the image is dropped at once: only the downloads' own buffers are measured

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(HANG_S)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert correct == [True] * CLIENTS
    # the budget, plus one finished image a client still holds while the next download fills, plus 1 MB of overhead
    assert peak - base < BUDGET + IMAGE_BYTES + MB, f"{(peak - base) / MB:.1f} MB held"
    assert fetcher.budget.peak <= BUDGET


def test_waiting_for_room_in_the_budget_ends_at_the_deadline(raw_server) -> None:
    started = threading.Event()

    def drip_unsized(conn: socket.socket, head: str, stop: threading.Event, served: Served) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close\r\n\r\n")
        while not stop.wait(0.05):
            conn.sendall(b"x")
            served.sent(1)
            started.set()

    server = raw_server(drip_unsized)
    budget = ByteBudget(BUDGET)  # one process's budget, shared by two fetchers with different deadlines
    patient = MediaFetcher(MediaSettings(allowed_hosts={server.host}, max_bytes=CAP, timeout_s=HANG_S), budget=budget)
    hasty = MediaFetcher(MediaSettings(allowed_hosts={server.host}, max_bytes=CAP, timeout_s=2.0), budget=budget)
    held: list[bytes] = []

    def holder() -> None:  # no length: it reserves the whole per-image cap, so nobody else fits beside it
        held.append(patient.fetch(f"{server.url}/slow.bin"))

    thread = threading.Thread(target=holder)
    thread.start()
    assert started.wait(HANG_S)
    message = one_line_error(lambda: hasty.fetch(f"{server.url}/second.bin"))
    assert len(server.served.requests) == 2 and budget.held == CAP  # it waited for room while the first one read
    server.stop.set()  # the drip ends: the first download completes
    thread.join(HANG_S)
    assert "MINIGPT_FETCH_BUDGET_MB" in message and "within 2 s" in message
    assert held and set(held[0]) == {ord("x")}
    assert budget.held == 0  # every reservation was given back


def test_an_image_over_the_cap_is_refused_naming_the_setting(raw_server) -> None:
    def huge(conn: socket.socket, head: str, stop: threading.Event, served: Served) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % (64 * MB))

    server = raw_server(huge)
    message = one_line_error(lambda: fetcher_for(server, max_bytes=CAP, budget_bytes=BUDGET).fetch(server.url + "/"))
    assert f"{64 * MB} bytes" in message and "MINIGPT_FETCH_MAX_MB" in message


def test_a_token_exchange_answer_is_read_only_as_far_as_a_token_can_go(raw_server) -> None:
    # The exchange answer used to be read whole (response.json()); a server that answers endlessly filled memory.
    total = 64 * MB
    endless = memoryview(bytes(MB))

    def exchange(conn: socket.socket, head: str, stop: threading.Event, served: Served) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % total)
        for _ in range(total // MB):
            conn.sendall(endless)
            served.sent(MB)

    server = raw_server(exchange)
    pat = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in ({"alg": "HS256"}, {"token_type": "refresh", "exp": 9_999_999_999}, "sig")
    )
    fetcher = MediaFetcher(MediaSettings(label_studio_url=server.url, api_key=pat, timeout_s=HANG_S))
    message = one_line_error(lambda: fetcher.fetch("/data/upload/1/a.png"))
    assert "no usable access token" in message
    server.stop.set()
    assert server.served.body_bytes < total, "the whole answer was read"


def test_download_limits_come_from_the_environment() -> None:
    defaults = MediaSettings()
    assert defaults.max_bytes <= 64 * MB <= defaults.budget_bytes  # a photo fits, eight of them do not
    found = MediaSettings.from_env({"MINIGPT_FETCH_MAX_MB": "8", "MINIGPT_FETCH_BUDGET_MB": "32.5"})
    assert (found.max_bytes, found.budget_bytes) == (8 * MB, int(32.5 * MB))
    with pytest.raises(MediaError) as info:
        MediaSettings.from_env({"MINIGPT_FETCH_MAX_MB": "100", "MINIGPT_FETCH_BUDGET_MB": "50"})
    assert "MINIGPT_FETCH_BUDGET_MB" in str(info.value) and "MINIGPT_FETCH_MAX_MB" in str(info.value)
    with pytest.raises(MediaError, match="MINIGPT_FETCH_MAX_MB"):
        MediaSettings.from_env({"MINIGPT_FETCH_MAX_MB": "lots"})


# --- item 13: no secret from a task URL reaches a log line or an error ------------------------------------------------

SECRET_KEYS = [
    "access_token",
    "X-Amz-Signature",
    "sig",
    "token",
    "X-Amz-Credential",
    "api_key",
    "password",
    "Signature",
]
SECRET_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~"


def secret_text() -> st.SearchStrategy[str]:
    return st.text(SECRET_ALPHABET, min_size=6, max_size=16).map(lambda tail: f"Zq{tail}9")


def case_mixed(word: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
        lambda flips: "".join(ch.upper() if flip else ch.lower() for ch, flip in zip(word, flips, strict=True))
    )


def encoded(text: str, times: int) -> str:
    for _ in range(times):
        text = quote(text, safe="")
    return text


@st.composite
def secret_url(draw: st.DrawFn, depth: int = 0) -> tuple[str, list[str]]:
    """A URL with secrets in its user info, secret-named parameters, fragment, and URL-encoded URLs nested in values."""
    secrets: list[str] = []
    scheme = draw(st.sampled_from(["http", "https", "HTTPS"]))
    userinfo = ""
    if draw(st.booleans()):
        user, password = draw(secret_text()), draw(secret_text())
        secrets += [user, password]
        userinfo = f"{user}:{password}@" if draw(st.booleans()) else f"{user}@"
        secrets = secrets if ":" in userinfo else secrets[:1]
    path = "/" + "/".join(draw(st.lists(st.sampled_from(["img", "a.png", "x y", "data", "%20"]), max_size=3)))
    pairs: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            key, value = draw(case_mixed(draw(st.sampled_from(SECRET_KEYS)))), draw(secret_text())
            secrets.append(value)
            pairs.append(f"{encoded(key, draw(st.integers(0, 1)))}={value}")
        else:
            pairs.append(f"{draw(st.sampled_from(['d', 'w', 'page']))}={draw(st.sampled_from(['1', 'a.png', '']))}")
    if depth < 2 and draw(st.booleans()):
        inner, inner_secrets = draw(secret_url(depth + 1))
        secrets += inner_secrets
        pairs.insert(draw(st.integers(0, len(pairs))), f"next={encoded(inner, draw(st.integers(0, 3)))}")
    url = f"{scheme}://{userinfo}cdn.example.com{path}"
    if pairs:
        url += "?" + draw(st.sampled_from(["&", ";"])).join(pairs)
    if draw(st.booleans()):
        value = draw(secret_text())
        secrets.append(value)
        url += f"#access_token={value}&token_type=bearer"
    return url, secrets


def decodings(text: str) -> Iterator[str]:
    """The text and every further percent-decoding of it: a secret must not hide behind an encoding."""
    for _ in range(6):
        yield text
        text = unquote_plus(text)


@settings(max_examples=400, derandomize=True, deadline=None)
@given(secret_url())
@example(
    (
        "https://u:pw1234567@h/x?next=https%3A%2F%2Fa%3Ab7777777%40h2%2Fy%3Fsig%3Dc8888888",
        ["pw1234567", "b7777777", "c8888888"],
    )
)
@example(("http://h/?next=http%253A%252F%252Fh%252F%253Faccess_token%253Dtok99999", ["tok99999"]))
def test_redaction_removes_every_secret(case: tuple[str, list[str]]) -> None:
    url, secrets = case
    for shown in (redact_url(url), redact_text(f"GET {url} failed")):
        for text in decodings(shown):
            for secret in secrets:
                assert secret not in text, (url, shown)


def test_redaction_keeps_what_helps() -> None:
    assert redact_url("http://ls:8080/data/local-files/?d=sub/a.png") == "http://ls:8080/data/local-files/?d=sub/a.png"
    shown = redact_url("https://b.s3.amazonaws.com/k.png?X-Amz-Signature=abc&X-Amz-Expires=60")
    assert shown == "https://b.s3.amazonaws.com/k.png?X-Amz-Signature=***&X-Amz-Expires=60"
    assert redact_url("http://user:pw@h/a.png") == "http://***@h/a.png"
    assert len(redact_url("http://h/" + "a" * 10_000)) < 400


SECRETS = ["pw-2f9a7c", "tok-8d1e4b", "sig-5c3b2a", "nested-7e6f1d", "frag-4a9b8c", "amz-3f2e1d"]
LEAKY = [
    "/img.png?access_token=tok-8d1e4b&w=1",
    "/img.png?X-Amz-Signature=amz-3f2e1d&X-Amz-Expires=60",
    "/img.png?next="
    + quote("http://u:pw-2f9a7c@h/x?sig=sig-5c3b2a&y=" + quote("?token=nested-7e6f1d", safe=""), safe=""),
    "/img.png#access_token=frag-4a9b8c",
]


def test_secret_urls_stay_out_of_errors_and_logs(raw_server, caplog: pytest.LogCaptureFixture) -> None:
    def not_found(conn: socket.socket, head: str, stop: threading.Event, served: Served) -> None:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")

    server = raw_server(not_found)
    fetcher = fetcher_for(server)
    messages = []
    with caplog.at_level(logging.DEBUG):  # urllib3 logs each request line, query string included, at DEBUG
        for path in LEAKY:
            messages.append(one_line_error(lambda path=path: fetcher.fetch(server.url + path)))
        messages.append(one_line_error(lambda: fetcher.fetch("http://u:pw-2f9a7c@cdn.example.com/?sig=sig-5c3b2a")))
    assert any("/img.png" in message for message in messages)
    assert server.served.requests, "the requests were made (and logged)"
    for text in [*messages, caplog.text]:
        for decoded in decodings(text):
            for secret in SECRETS:
                assert secret not in decoded, text


def test_remote_reason_phrases_are_not_echoed(raw_server, caplog: pytest.LogCaptureFixture) -> None:
    def odd_reason(conn: socket.socket, head: str, stop: threading.Event, served: Served) -> None:
        conn.sendall(b"HTTP/1.1 404 go to evil.example ?token=reason-secret <b>\r\nContent-Length: 0\r\n\r\n")

    server = raw_server(odd_reason)
    with caplog.at_level(logging.DEBUG):
        message = one_line_error(lambda: fetcher_for(server).fetch(f"{server.url}/a.png"))
    assert "HTTP 404 Not Found" in message
    for text in (message, caplog.text):
        assert "evil.example" not in text and "reason-secret" not in text and "<b>" not in text


def test_the_backend_log_names_a_task_image_without_its_secrets(caplog: pytest.LogCaptureFixture) -> None:
    from ml_backend.backend import MiniGPTBackend
    from ml_backend.server import create_app
    from ml_backend.settings import load_proposer
    from model.synthetic.shapes_model import SHIPPED_DIR

    fetcher = MediaFetcher(MediaSettings(label_studio_url=None, api_key=None))
    client = create_app(MiniGPTBackend(load_proposer(str(SHIPPED_DIR), "cpu"), fetcher)).test_client()
    config = '<View><Image name="image" value="$image"/><RectangleLabels name="l" toName="image"><Label value="a"/>'
    config += "</RectangleLabels></View>"
    tasks = [{"id": 1, "data": {"image": "https://u:pw-2f9a7c@cdn.example.com/a.png?sig=sig-5c3b2a"}}]
    with caplog.at_level(logging.DEBUG):
        response = client.post("/predict", json={"tasks": tasks, "label_config": config})
    assert response.status_code == 200
    assert "cdn.example.com/a.png" in caplog.text  # the task's image is named...
    assert "pw-2f9a7c" not in caplog.text and "sig-5c3b2a" not in caplog.text  # ...without its secrets


# --- item 14: the Label Studio token goes only to requests that start at Label Studio --------------------------------

TOKEN = "legacy-token-0123456789"


def label_studio(conn: socket.socket, head: str, stop: threading.Event, served: Served) -> bool:
    path = path_of(head)
    if path.startswith("/to/"):  # /to/<url>: a redirect anywhere
        location = unquote(path[len("/to/") :]).encode()
        conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: " + location + b"\r\nContent-Length: 0\r\n\r\n")
    elif authorization_of(head) != f"Token {TOKEN}":
        conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    else:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(PNG) + PNG)
    return True


@pytest.fixture
def two_hosts(raw_server) -> tuple[RawServer, RawServer]:
    return raw_server(label_studio), raw_server(label_studio)  # Label Studio, and a third party that bounces


def ls_fetcher(ls: RawServer, other: RawServer) -> MediaFetcher:
    return MediaFetcher(
        MediaSettings(label_studio_url=ls.url, api_key=TOKEN, allowed_hosts={other.host}, timeout_s=HANG_S)
    )


def test_a_redirect_from_a_third_party_to_label_studio_carries_no_token(two_hosts) -> None:
    ls, other = two_hosts
    bounce = f"{other.url}/to/{quote(ls.url + '/data/upload/1/a.png', safe='')}"
    message = one_line_error(lambda: ls_fetcher(ls, other).fetch(bounce))
    assert [authorization_of(head) for head in ls.served.requests] == [None]
    assert [authorization_of(head) for head in other.served.requests] == [None]
    assert "HTTP 401" in message and "redirect" in message and TOKEN not in message


def test_a_round_trip_through_a_third_party_loses_the_token(two_hosts) -> None:
    ls, other = two_hosts
    back = f"{other.url}/to/{quote(ls.url + '/data/upload/1/a.png', safe='')}"
    one_line_error(lambda: ls_fetcher(ls, other).fetch(f"/to/{quote(back, safe='')}"))
    assert [authorization_of(head) for head in ls.served.requests] == [f"Token {TOKEN}", None]
    assert [authorization_of(head) for head in other.served.requests] == [None]


def test_redirects_within_label_studio_keep_the_token(two_hosts) -> None:
    ls, other = two_hosts
    assert ls_fetcher(ls, other).fetch(f"/to/{quote('/data/upload/1/a.png', safe='')}") == PNG
    assert [authorization_of(head) for head in ls.served.requests] == [f"Token {TOKEN}"] * 2


# --- item 15: non-canonical local-files paths are local files, never a token-bearing Label Studio fetch --------------


@pytest.fixture(scope="module")
def local_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("local")
    root = base / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(b"A")
    (root / "sub" / "b.png").write_bytes(b"B")
    (base / "secret.png").write_bytes(b"SECRET")
    (root / "out_link").symlink_to(base)
    return root


@pytest.fixture
def recording_ls(raw_server) -> RawServer:
    def anything(conn: socket.socket, head: str, stop: threading.Event, served: Served) -> bool:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: 6\r\n\r\nserved")
        return True

    return raw_server(anything)


def local_fetcher(ls: RawServer, root: Path, prefix: str = "") -> MediaFetcher:
    return MediaFetcher(
        MediaSettings(label_studio_url=ls.url + prefix, api_key=TOKEN, local_files_root=root, timeout_s=HANG_S)
    )


NON_CANONICAL = [
    "/data/local-files/./?d=a.png",
    "/data//local-files/?d=a.png",
    "/data/./local-files?d=a.png",
    "/data/x/../local-files/?d=a.png",
    "/data/%6cocal-files/?d=a.png",
    "/data/local-files/%2e/?d=a.png",
    "/data/local-files/%2E?d=a.png",
    "/data%2flocal-files/?d=a.png",
    "/data%2Flocal-files%2F?d=a.png",
    "/data/x/%2e%2e/local-files/?d=a.png",
    "/data/local-files/sub%2F..?d=a.png",
    "/data/%256cocal-files/?d=a.png",
    "/data/local-files/x%252F..%252F?d=a.png",
    "/DATA/Local-Files/?d=a.png",
    "/data\\local-files/?d=a.png",
    "/../data/local-files/?d=a.png",
]


@pytest.mark.parametrize("path", NON_CANONICAL)
def test_non_canonical_local_files_paths_are_read_from_disk(
    recording_ls: RawServer, local_root: Path, path: str
) -> None:
    fetcher = local_fetcher(recording_ls, local_root)
    assert fetcher.fetch(path) == b"A"
    assert fetcher.fetch(recording_ls.url + path) == b"A"
    assert recording_ls.served.requests == []  # Label Studio never saw the token for a local file


def test_other_label_studio_paths_are_still_downloaded(recording_ls: RawServer, local_root: Path) -> None:
    fetcher = local_fetcher(recording_ls, local_root)
    assert fetcher.fetch("/data/upload/1/a%20b.png") == b"served"
    assert fetcher.fetch("/data/local-files-x/?d=a.png") == b"served"
    assert [path_of(head) for head in recording_ls.served.requests] == [
        "/data/upload/1/a%20b.png",
        "/data/local-files-x/?d=a.png",
    ]


SEPARATORS = ["/", "/", "//", "/./", "/%2e/", "%2f", "%2F", "/x/../", "/x/%2e%2e/", "/%252e/", "\\"]
D_VALUES = [
    "a.png",
    "sub/b.png",
    "sub/../a.png",
    "../secret.png",
    "%2e%2e/secret.png",
    "out_link/secret.png",
    "/etc/passwd",
]


@st.composite
def local_files_variant(draw: st.DrawFn) -> str:
    def spell(word: str) -> str:
        out = []
        for ch in word:
            times = draw(st.sampled_from([0, 0, 0, 1, 2]))
            text = ch
            for _ in range(times):
                text = "".join(f"%{byte:02{draw(st.sampled_from(['x', 'X']))}}" for byte in text.encode())
            out.append(text)
        return "".join(out)

    lead = draw(st.sampled_from(["/", "//", "/../", "/./"]))
    middle = draw(st.sampled_from(SEPARATORS))
    tail = draw(st.sampled_from(["/", "", "/.", "/%2e", "//", "/x/.."]))
    return f"{lead}{spell('data')}{middle}{spell('local-files')}{tail}"


@settings(
    max_examples=250, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=local_files_variant(),
    d=st.sampled_from(D_VALUES),
    prefix=st.sampled_from(["", "/ls"]),
    absolute=st.booleans(),
)
@example(path="/data/%6cocal-files/", d="a.png", prefix="", absolute=False)
def test_no_spelling_of_local_files_reaches_label_studio(
    recording_ls: RawServer, local_root: Path, path: str, d: str, prefix: str, absolute: bool
) -> None:
    reference = (recording_ls.url if absolute else "") + prefix + path + "?d=" + d
    try:
        data = local_fetcher(recording_ls, local_root, prefix).fetch(reference)
    except MediaError as err:
        assert "\n" not in str(err)
        data = None
    assert recording_ls.served.requests == [], reference  # no token-bearing fetch for anything that names local files
    assert data in (None, b"A", b"B"), reference  # and nothing outside the root
