"""The ML-backend HTTP contract Label Studio speaks: `/health`, `/setup`, `/predict`, `/webhook`, `/metrics`,
plus `/propose`, a small JSON API for the desktop annotator's remote engine (a labeller without a GPU).

Request bodies are checked with pydantic; a bad request gets a 400 whose `error` names the cause. Basic auth is
optional (Label Studio sends it when the connection is set up with a user and password); it covers every endpoint
but `/` and `/health`.

`POST /propose` needs no label config. Body (at most 64 MiB, else 413; unknown fields are refused):

    {"image": "<base64 of the encoded image file: JPEG, PNG, ...; a data: URL prefix is accepted>",
     "prompts": [{"task": "detection", "query": "circle", "box": null}, ...],   # 1 to 64 prompts
     "options": {"max_new_tokens": 40, ...}}                                      # optional GenerationOptions fields

`box` is `[x0, y0, x1, y1]` in pixels of the upright image (EXIF orientation applied), `[identify]` only. The image
is decoded once and every prompt runs in one batch. Answer, 200:

    {"model_version": "...", "results": [ProposalResult.model_dump(mode="json"), ...]}   # one per prompt, in order

so `ProposalResult.model_validate` rebuilds each result exactly; `image` is "<bytes>" and `width`/`height` and every
box are those of the image as sent. Errors: 400 for a malformed body or a prompt the task does not accept (e.g. a box
on `[detection]`), 413 for a body over the limit, 422 for an image that cannot be decoded (the `error` is the
decoder's one-line cause), 401 without the configured basic auth.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model.errors import MiniGPTError, PromptError
from model.images import load_image
from model.proposer import GenerationOptions
from model.request import Prompt

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


MAX_PROMPTS = 64  # per /propose call: one batch's worth of work per request keeps the model lock fair
MAX_PROPOSE_BYTES = 64 * 1024 * 1024  # a base64 photo of 40+ MB; the desktop app sends at most 1344 px images


class PayloadTooLarge(BadPayload):
    """The request body is larger than the endpoint accepts."""


class _Strict(BaseModel):
    # The desktop app and the server may run different versions: a field this server does not know (a typo, or a
    # newer client's feature) is refused with its name instead of being silently ignored.
    model_config = ConfigDict(extra="forbid")


class OptionsPayload(GenerationOptions):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProposePayload(_Strict):
    image: str = Field(min_length=1, description="base64 of the encoded image file")
    prompts: list[Prompt] = Field(min_length=1, max_length=MAX_PROMPTS)  # the core shape: task, query, box
    options: OptionsPayload | None = None

    def image_bytes(self) -> bytes:
        text = self.image
        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]  # a data: URL, as a browser's FileReader makes it
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as err:
            raise BadPayload(f"malformed request: image: not valid base64 ({err})") from err


def create_app(backend: MiniGPTBackend, *, basic_auth: tuple[str, str] | None = None) -> Flask:
    app = Flask("minigpt_annotate_ml_backend")
    app.config["backend"] = backend

    @app.before_request
    def _authenticate() -> Response | None:
        if basic_auth is None or request.path in ("/", "/health"):
            return None
        given = request.authorization
        user, password = basic_auth
        if given is None or not (
            hmac.compare_digest(given.username or "", user) and hmac.compare_digest(given.password or "", password)
        ):
            response = jsonify(error="basic auth required: set the user and password in the ML backend connection")
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Basic realm="minigpt-annotate"'
            return response
        return None

    @app.errorhandler(ValidationError)
    def _bad_payload(err: ValidationError) -> tuple[Response, int]:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in err.errors())
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

    @app.post("/propose")
    def propose() -> Response:
        payload = ProposePayload.model_validate(_limited_json(MAX_PROPOSE_BYTES))
        image = load_image(payload.image_bytes())  # ImageLoadError → 422 with the decoder's cause
        prompts = payload.prompts
        started = time.perf_counter()
        try:
            results = backend.propose(image, prompts, payload.options)
        except PromptError as err:  # the client asked for something the task does not take: its mistake, 400
            raise BadPayload(f"bad prompt: {err}") from err
        log.info(
            "proposed %d prompt(s) on a %dx%d image in %.2f s",
            len(prompts),
            image.width,
            image.height,
            time.perf_counter() - started,
        )
        return jsonify(model_version=backend.model_version, results=[r.model_dump(mode="json") for r in results])

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
        "send a smaller image (downscaled to at most 1344 px on its long side, the model sees 448 px anyway)"
    )
