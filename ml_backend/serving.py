"""`minigpt-annotate serve`: the backend on waitress, the one server command for a laptop and for production.

Waitress reads every request whole (headers and body, a large body spooled to a temporary file) in one event loop
before a worker thread sees it, and buffers every answer, so a client that sends or reads slowly holds a socket, not
a thread: ten or a hundred slow sockets cannot starve `/health` the way they starve a thread-per-connection server.
Its settings live in :func:`waitress_options`, built from :class:`ServerSettings` and :class:`RequestLimits`. A body
declaring more than any route takes is refused by waitress from its headers alone, before it is sent; the answer
is the app's JSON 413 naming the limit and the fix (:func:`_limit_aware`), not waitress's plain text.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import select
import signal
import threading
from pathlib import Path
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask
from waitress.utilities import RequestEntityTooLarge

from label_studio_access.media import MediaSettings

from .server import create_app, too_large_message
from .settings import BackendSettings, RequestLimits, ServerSettings, build_backend, configure_logging

log = logging.getLogger("ml_backend")


def waitress_options(server: ServerSettings, limits: RequestLimits) -> dict[str, Any]:
    """waitress's adjustments for the backend (see waitress.adjustments.Adjustments)."""
    return {
        "threads": server.threads,
        "connection_limit": server.connection_limit,
        "channel_timeout": server.idle_timeout,
        "max_request_header_size": server.max_header_bytes,
        # The largest body any route takes (waitress refuses a body of exactly this size, hence + 1); each route then
        # refuses more than its own limit before reading it.
        "max_request_body_size": limits.largest_body + 1,
        # Keep reading a connection while its request runs, so a client that hung up is noticed
        # (environ["waitress.client_disconnected"]) and a long /predict stops instead of running for nobody.
        "channel_request_lookahead": 1,
        # select() cannot watch more than 1,024 sockets; poll() can, where it exists (not on Windows)
        "asyncore_use_poll": hasattr(select, "poll"),
        "ident": "minigpt-annotate",
    }


def serve(
    *,
    model: str | None,
    host: str = "127.0.0.1",
    port: int = 9090,
    corrections_dir: Path | None = None,
    score_threshold: float | None = None,
    model_version: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    learn: bool | None = None,
    learn_every: int | None = None,
    learn_dir: Path | None = None,
    learn_recipe: Path | None = None,
    rollback: bool = False,
) -> int:
    configure_logging()
    settings = BackendSettings.from_env(
        model=model,
        corrections_dir=corrections_dir,
        score_threshold=score_threshold,
        model_version=model_version,
        device=device,
        dtype=dtype,
        learn=learn,
        learn_every=learn_every,
        learn_dir=learn_dir,
        learn_recipe=learn_recipe,
    )
    media = MediaSettings.from_env()
    limits = RequestLimits.from_env()
    server_settings = ServerSettings.from_env()
    backend = build_backend(settings, media, limits, rollback=rollback)
    app = create_app(backend, basic_auth=settings.basic_auth, limits=limits)
    server = _limit_aware(create_server(app, host=host, port=port, **waitress_options(server_settings, limits)), limits)
    log.info(
        "serving %s (version %s) on http://%s:%d; Label Studio at %s%s",
        backend.model_source,
        backend.model_version,
        host,
        int(getattr(server, "effective_port", port)),  # "localhost" may listen on two sockets: no single port
        media.label_studio_url or "(LABEL_STUDIO_URL not set: only local files and allowed hosts)",
        f"; corrections in {settings.corrections_dir}" if settings.corrections_dir else "",
    )
    if backend.learning is not None:
        log.info(
            "learning: a fine-tune starts after every %d stored correction(s); models and runs in %s",
            settings.learn_every,
            settings.learning_dir,
        )
    if settings.basic_auth is None and not _loopback(host):
        log.warning(
            "listening on %s without basic auth: anyone who reaches this port can run the model and write "
            "corrections; set BASIC_AUTH_USER and BASIC_AUTH_PASS (README, Production)",
            host,
        )
    # `docker stop` sends SIGTERM to PID 1, which ignores signals it has no handler for: stop like on Ctrl+C.
    if threading.current_thread() is threading.main_thread():  # only the main thread may set a signal handler
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run()  # returns after Ctrl+C or SIGTERM, having stopped the worker threads
    finally:
        if backend.learning is not None:
            backend.learning.stop()  # a run in progress is killed; the next start deletes what it left
        log.info("stopped")
    return 0


def _limit_aware(server: Any, limits: RequestLimits) -> Any:
    """`server` answering a body over waitress's max_request_body_size with the app's JSON 413 (the route, its limit,
    the setting or fix), so a client reads the same `error` whichever of the two refused it."""

    class LimitErrorTask(ErrorTask):
        def execute(self) -> None:
            request = self.request  # waitress's parser: path and headers are read, the body is not
            if not isinstance(request.error, RequestEntityTooLarge):
                super().execute()
                return
            declared = request.headers.get("CONTENT_LENGTH", "")
            message = too_large_message(request.path, int(declared) if declared.isdigit() else None, limits)
            body = json.dumps({"error": message}).encode()
            self.status = "413 Request Entity Too Large"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class LimitChannel(HTTPChannel):
        error_task_class = LimitErrorTask

    # create_server returns one listener, or for a name with several addresses a server holding one per address
    listeners = [server] if isinstance(server, BaseWSGIServer) else list(server.map.values())
    for listener in listeners:
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = LimitChannel
    return server


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False
