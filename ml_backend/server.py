"""The ML-backend HTTP contract Label Studio speaks: `/health`, `/setup`, `/predict`, `/webhook`, `/metrics`.

Request bodies are checked with pydantic; a bad request gets a 400 whose `error` names the cause. Basic auth is
optional (Label Studio sends it when the connection is set up with a user and password).
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from model.errors import MiniGPTError

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

    @app.get("/metrics")
    def metrics() -> Response:
        return jsonify(backend.metrics.as_dict())

    return app


def _json() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadPayload("the request body must be a JSON object (Content-Type: application/json)")
    return body
