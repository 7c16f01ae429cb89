"""The ML-backend HTTP contract Label Studio speaks: `/health`, `/setup`, `/predict`, `/webhook`, `/metrics`,
plus `/propose`, a small JSON API for the desktop annotator's remote engine (a labeller without a GPU).

Request bodies are checked with pydantic; a bad request gets a 400 whose `error` names the cause. Basic auth is
optional (Label Studio sends it when the connection is set up with a user and password); it covers every endpoint
but `/` and `/health`.

`POST /propose` needs no label config; its body and answer are the contract in :mod:`model.propose_api`, the one the
desktop app's remote engine builds its requests with. The image is decoded once and every prompt runs in one batch.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model import propose_api
from model.errors import MiniGPTError, PromptError
from model.images import MODEL_FIT_PIXELS, load_image
from model.propose_api import ProposeAnswer, ProposeBody

from .backend import WEBHOOK_EVENTS, MiniGPTBackend
from .label_config import LabelConfigError

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


def create_app(backend: MiniGPTBackend, *, basic_auth: tuple[str, str] | None = None) -> Flask:
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
        payload = SetupPayload.model_validate(_json())
        project = str(payload.project) if payload.project is not None else None
        return jsonify(model_version=backend.setup(project, payload.label_config))

    @app.post("/predict")
    def predict() -> Response:
        payload = PredictPayload.model_validate(_json())
        project = str(payload.project) if payload.project is not None else None
        config = backend.label_config_for(project, payload.label_config)
        started = time.perf_counter()
        results = backend.predict(payload.tasks, payload.context, config)
        log.info(
            "predicted %d task(s)%s in %.2f s",
            len(payload.tasks),
            " (interactive)" if payload.context else "",
            time.perf_counter() - started,
        )
        return jsonify(results=results, model_version=backend.model_version)

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        payload = WebhookPayload.model_validate(_json())
        if payload.action not in WEBHOOK_EVENTS:
            return jsonify(status="Unknown event", action=payload.action), 200
        outcome = backend.fit(payload.action, payload.model_dump(by_alias=True))
        return jsonify(status="ok", action=payload.action, **outcome), 201

    @app.post(propose_api.PATH)
    def propose() -> Response:
        body = ProposeBody.model_validate(_limited_json(propose_api.MAX_BODY_BYTES))
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
        return jsonify(backend.metrics.as_dict())

    return app


def _json() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadPayload("the request body must be a JSON object (Content-Type: application/json)")
    return body


def _limited_json(limit: int) -> dict:
    """The body as a JSON object, refused with 413 before it is read when its declared size is over `limit`.

    Read here rather than through app-wide MAX_CONTENT_LENGTH, so Label Studio's endpoints keep their behaviour.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise _too_large(declared, limit)
    data = request.stream.read(limit + 1)  # also bounds a chunked body, which declares no length
    if len(data) > limit:
        raise _too_large(None, limit)
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise BadPayload("the request body must be a JSON object (Content-Type: application/json)")
    return body


def _too_large(size: int | None, limit: int) -> PayloadTooLarge:
    what = f"has {size:,} bytes, more" if size is not None else "is larger"
    return PayloadTooLarge(
        f"the request body {what} than the {limit:,} bytes {request.path} accepts; "
        f"send a smaller image (downscaled to at most {propose_api.MAX_UPLOAD_SIDE} px on its long side, the model "
        "sees 448 px anyway)"
    )
