"""The ML-backend HTTP contract Label Studio speaks: `/health`, `/setup`, `/predict`, `/webhook`, `/metrics`,
plus `/propose`, a small JSON API for the desktop annotator's remote engine (a labeller without a GPU).

Request bodies are checked with pydantic; a bad request gets a 400 whose `error` names the cause. Every JSON body
has a per-route size limit (:class:`~ml_backend.settings.RequestLimits`), checked before it is read, and a /predict
a task limit, checked before any task runs: over either, a 413 naming the setting. Basic auth is optional (Label
Studio sends it when the connection is set up with a user and password); it covers every endpoint but `/` and
`/health`.

`POST /propose` needs no label config; its body and answer are the contract in :mod:`model.propose_api`, the one the
desktop app's remote engine builds its requests with. The image is decoded once and every prompt runs in one batch.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import time
from typing import Any

import numpy as np
from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from label_studio_access.label_config import LabelConfigError
from model import propose_api
from model.errors import MiniGPTError, PromptError
from model.images import MODEL_FIT_PIXELS, load_image
from model.propose_api import ProposeAnswer, ProposeBody

from .backend import WEBHOOK_EVENTS, MiniGPTBackend, PredictAbandoned
from .settings import RequestLimits

log = logging.getLogger(__name__)


class BadPayload(MiniGPTError):
    """The request body is not what the contract says."""


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class PredictPayload(_Lenient):
    tasks: list[dict[str, Any]]
    label_config: str | None = None
    project: str | int | None = None
    params: dict[str, Any] | None = None

    @property
    def context(self) -> dict | None:
        context = (self.params or {}).get("context")
        return context if isinstance(context, dict) else None


class SetupPayload(_Lenient):
    project: str | int | None = None
    label_config: str | None = Field(default=None, alias="schema")


class WebhookPayload(_Lenient):
    action: str


class PayloadTooLarge(BadPayload):
    """The request body is larger than the endpoint accepts."""


def _same_secret(given: str | None, expected: str) -> bool:
    """Constant-time comparison of credentials; compared as UTF-8 bytes because `hmac.compare_digest` refuses
    non-ASCII str (a TypeError, which was a 500 for a client sending or a server configured with `é`)."""
    return hmac.compare_digest(
        (given or "").encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


# Label Studio's payloads nest about ten levels (request, tasks, task, annotations, result, value, labels) plus what
# a project puts in its task data. Deeper bodies are refused before parsing: Python's parser would raise
# RecursionError somewhere near 1,000 levels, and where exactly depends on the interpreter version.
MAX_JSON_DEPTH = 100

# Where a WSGI server says whether the client is still connected: waitress (with channel_request_lookahead > 0).
CLIENT_DISCONNECTED = "waitress.client_disconnected"


def create_app(
    backend: MiniGPTBackend, *, basic_auth: tuple[str, str] | None = None, limits: RequestLimits | None = None
) -> Flask:
    limits = limits or RequestLimits()
    app = Flask("minigpt_annotate_ml_backend")
    app.config["backend"] = backend

    @app.before_request
    def _authenticate() -> Response | None:
        if basic_auth is None or request.path in ("/", "/health"):
            return None
        given = request.authorization
        user, password = basic_auth
        if given is None or not (_same_secret(given.username, user) and _same_secret(given.password, password)):
            response = jsonify(error="basic auth required: set the user and password in the ML backend connection")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Basic realm="minigpt-annotate"'
            return response
        return None

    @app.errorhandler(ValidationError)
    def _bad_payload(err: ValidationError) -> tuple[Response, int]:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()
        )
        return jsonify(error=f"malformed request: {problems}"), 400

    @app.errorhandler(PayloadTooLarge)
    def _too_large(err: PayloadTooLarge) -> tuple[Response, int]:
        return jsonify(error=str(err)), 413

    @app.errorhandler(LabelConfigError)
    @app.errorhandler(BadPayload)
    def _bad_config(err: MiniGPTError) -> tuple[Response, int]:
        return jsonify(error=str(err)), 400

    @app.errorhandler(PredictAbandoned)
    def _abandoned(err: PredictAbandoned) -> tuple[Response, int]:
        log.info("%s %s: %s", request.method, request.path, err)
        return jsonify(error=str(err)), 499  # nginx's "client closed request": nobody reads it

    @app.errorhandler(MiniGPTError)
    def _failed(err: MiniGPTError) -> tuple[Response, int]:
        log.error("%s %s: %s", request.method, request.path, err)
        return jsonify(error=str(err)), 422

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        return jsonify(status="UP", model_class=type(backend).__name__, model_version=backend.model_version)

    @app.post("/setup")
    def setup() -> Response:
        payload = SetupPayload.model_validate(_limited_json(limits))
        project = str(payload.project) if payload.project is not None else None
        return jsonify(model_version=backend.setup(project, payload.label_config))

    @app.post("/predict")
    def predict() -> Response:
        payload = PredictPayload.model_validate(_limited_json(limits))
        if len(payload.tasks) > limits.predict_tasks:
            setting = RequestLimits.ENV["predict_tasks"]
            raise PayloadTooLarge(
                f"this /predict carries {len(payload.tasks):,} tasks, more than the {limits.predict_tasks:,} "
                f"{setting} allows; select fewer tasks in Label Studio, or raise {setting} on the backend"
            )
        project = str(payload.project) if payload.project is not None else None
        config = backend.label_config_for(project, payload.label_config)
        started = time.perf_counter()
        gone = request.environ.get(CLIENT_DISCONNECTED)
        results = backend.predict(payload.tasks, payload.context, config, gone, project=project)
        log.info(
            "predicted %d task(s)%s in %.2f s",
            len(payload.tasks),
            " (interactive)" if payload.context else "",
            time.perf_counter() - started,
        )
        return jsonify(results=results, model_version=backend.model_version)

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        payload = WebhookPayload.model_validate(_limited_json(limits))
        if payload.action not in WEBHOOK_EVENTS:
            return jsonify(status="Unknown event", action=payload.action), 200
        outcome = backend.fit(payload.action, payload.model_dump(by_alias=True))
        return jsonify(status="ok", action=payload.action, **outcome), 201

    @app.post(propose_api.PATH)
    def propose() -> Response:
        body = ProposeBody.model_validate(_limited_json(limits))
        image = load_image(body.image, fit_pixels=MODEL_FIT_PIXELS)  # ImageLoadError → 422 with the decoder's cause
        started = time.perf_counter()
        try:
            results = backend.propose(image, body.prompts, body.options)
        except PromptError as err:  # the client asked for something the task does not take: its mistake, 400
            raise BadPayload(f"bad prompt: {err}") from err
        log.info(
            "proposed %d prompt(s) on a %dx%d image in %.2f s",
            len(body.prompts),
            image.width,
            image.height,
            time.perf_counter() - started,
        )
        answer = ProposeAnswer(model_version=backend.model_version, results=results)
        return Response(answer.model_dump_json(), mimetype="application/json")

    @app.get("/metrics")
    def metrics() -> Response:
        learning = {"learning": backend.learning.status()} if backend.learning is not None else {}
        return jsonify(**backend.metrics.as_dict(), projects_remembered=backend.projects_remembered, **learning)

    return app


def _limited_json(limits: RequestLimits) -> dict:
    """The body as a JSON object, refused with 413 before it is read when it is over this route's limit.

    Read here rather than through Flask's app-wide MAX_CONTENT_LENGTH, so each route has its own limit and the
    413 names the setting. JSON nested more than MAX_JSON_DEPTH levels is a 400, refused before it is parsed.
    """
    limit, _ = limits.body_limit(request.path)
    declared = request.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(too_large_message(request.path, declared, limits))
    data = request.stream.read(limit + 1)  # also bounds a chunked body, which declares no length
    if len(data) > limit:
        raise PayloadTooLarge(too_large_message(request.path, None, limits))
    too_deep = BadPayload(f"the request body nests JSON more than {MAX_JSON_DEPTH} levels deep; send flatter JSON")
    if nests_deeper_than(data, MAX_JSON_DEPTH):
        raise too_deep
    try:
        body = json.loads(data)
    except RecursionError:  # cannot happen below MAX_JSON_DEPTH; kept so that raising it stays a 400
        raise too_deep from None
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise BadPayload("the request body must be a JSON object (Content-Type: application/json)")
    return body


def too_large_message(path: str, size: int | None, limits: RequestLimits) -> str:
    """Why a body sent to `path` is refused, and the fix: the one wording of the app's 413 and the HTTP server's."""
    limit, setting = limits.body_limit(path)
    what = f"has {size:,} bytes, more" if size is not None else "is larger"
    if path == propose_api.PATH:
        return (
            f"the request body {what} than the {limit:,} bytes {path} accepts; send a smaller image (downscaled "
            f"to at most {propose_api.MAX_UPLOAD_SIDE} px on its long side, the model sees 448 px anyway)"
        )
    if setting is None:
        return f"the request body {what} than the {limit:,} bytes this server accepts for any request"
    return (
        f"the request body {what} than the {limit:,} bytes {path} accepts ({setting}); "
        f"raise {setting} on the backend if such requests are expected"
    )


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)  # brackets inside strings do not nest
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 and -1 as int8
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[{]}")


def nests_deeper_than(data: bytes, limit: int) -> bool:
    """Whether the arrays and objects of a JSON text nest more than `limit` levels, in linear time and bounded memory,
    without parsing it (for malformed text, an answer about its brackets outside strings)."""
    if data.count(b"[") + data.count(b"{") <= limit:  # the common case for a large body: one base64 image
        return False
    steps = np.frombuffer(_JSON_STRING.sub(b"", data).translate(_BRACKET_STEPS, _NOT_BRACKETS), dtype=np.int8)
    level = 0
    for start in range(0, len(steps), 1 << 20):  # a running sum a megabyte at a time
        running = np.cumsum(steps[start : start + (1 << 20)], dtype=np.int64) + level
        if int(running.max()) > limit:
            return True
        level = int(running[-1])
    return False
