"""The backend's settings (command line or environment) and building the backend from them, once per process."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from label_studio_access.media import MediaFetcher, MediaSettings
from model import propose_api
from model.errors import MiniGPTError
from model.proposer import Proposer
from model.recipes import CORRECTIONS, recipe_path
from model.training.recipe import load_recipe

from . import learned_models
from .backend import MiniGPTBackend
from .corrections import CorrectionStore
from .learned_models import LearningState
from .learning import Learner

_Settings = TypeVar("_Settings", bound=BaseModel)


MiB = 1024 * 1024


def _from_env(
    cls: type[_Settings], names: Mapping[str, str], env: Mapping[str, str], overrides: Mapping[str, object]
) -> _Settings:
    """`cls` from the environment variables `names` maps its fields to, then `overrides` (command-line flags).

    A bad value is a MiniGPTError naming the variable, so a typo in a deployment is one line, not a traceback.
    """
    values: dict[str, object] = {key: env[name] for key, name in names.items() if env.get(name)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls.model_validate(values)
    except ValidationError as err:
        problems = "; ".join(f"{names.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in err.errors())
        raise MiniGPTError(f"invalid backend settings: {problems}") from err


class BackendSettings(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model: str = Field(description="model folder or hub id (MINIGPT_MODEL)")
    device: str = "auto"
    dtype: str = "auto"
    model_version: str | None = Field(default=None, description="shown in Label Studio; default: the folder name")
    corrections_dir: Path | None = Field(default=None, description="where webhooks store corrected boxes as COCO")
    score_threshold: float = Field(default=0.0, ge=0.0, le=1.0, description="boxes scoring lower are not suggested")
    batch_size: int = Field(default=16, ge=1)
    predict_budget_s: float = Field(
        default=80.0,
        gt=0,
        allow_inf_nan=False,
        description="seconds a batch /predict may run before answering what it has (Label Studio waits 100 s)",
    )
    basic_auth_user: str | None = None
    basic_auth_pass: SecretStr | None = None
    learn: bool = Field(default=False, description="fine-tune on the corrections and promote what does better")
    learn_every: int = Field(default=50, ge=1, description="stored corrections that start a learning run")
    learn_dir: Path | None = Field(default=None, description="learned models and runs; default <corrections>/models")
    learn_holdout: int = Field(default=20, ge=1, le=50, description="percent of tasks held out to judge candidates")
    learn_recipe: Path | None = Field(
        default=None, description="the training recipe of a learning run; default the shipped corrections.yaml"
    )
    learn_args: str = Field(default="", description="extra arguments for `train` (shell words, e.g. --set PATH=V)")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **overrides: object) -> BackendSettings:
        names = {
            "model": "MINIGPT_MODEL",
            "device": "MINIGPT_DEVICE",
            "dtype": "MINIGPT_DTYPE",
            "model_version": "MINIGPT_MODEL_VERSION",
            "corrections_dir": "MINIGPT_CORRECTIONS_DIR",
            "score_threshold": "MINIGPT_SCORE_THRESHOLD",
            "batch_size": "MINIGPT_BATCH_SIZE",
            "predict_budget_s": "MINIGPT_PREDICT_BUDGET_S",
            "learn": "MINIGPT_LEARN",
            "learn_every": "MINIGPT_LEARN_EVERY",
            "learn_dir": "MINIGPT_LEARN_DIR",
            "learn_holdout": "MINIGPT_LEARN_HOLDOUT",
            "learn_recipe": "MINIGPT_LEARN_RECIPE",
            "learn_args": "MINIGPT_LEARN_ARGS",
            "basic_auth_user": "BASIC_AUTH_USER",
            "basic_auth_pass": "BASIC_AUTH_PASS",
        }
        if not env.get("MINIGPT_MODEL") and overrides.get("model") is None:
            raise MiniGPTError("no model given: set MINIGPT_MODEL to a model folder (or pass --model)")
        return _from_env(cls, names, env, overrides)

    @property
    def learning_dir(self) -> Path | None:
        if self.learn_dir is not None:
            return self.learn_dir
        return self.corrections_dir / "models" if self.corrections_dir is not None else None

    @property
    def model_source(self) -> str:
        """The model as an absolute folder when it is one (what adapters and logged commands name), else its id."""
        return str(Path(self.model).resolve()) if Path(self.model).is_dir() else self.model

    @property
    def base_version(self) -> str:
        """The version the base model is served as (the Proposer's default: the folder name)."""
        return self.model_version or Path(self.model).name or "minigpt-v2"

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        if self.basic_auth_user and self.basic_auth_pass:
            return self.basic_auth_user, self.basic_auth_pass.get_secret_value()
        return None


class RequestLimits(BaseModel):
    """What one request may cost, per route: checked before a body is parsed or a task is run (README, Production).

    Label Studio sends every task selected for "Retrieve predictions" in one /predict, each task a few hundred bytes
    of JSON plus the label config, so the defaults leave room for a 10,000-task selection with a large config; the
    model time of a big selection is bounded by BackendSettings.predict_budget_s, not by this cap.
    """

    model_config = ConfigDict(frozen=True)

    predict_bytes: int = Field(default=16 * MiB, ge=1024)
    webhook_bytes: int = Field(default=16 * MiB, ge=1024)
    setup_bytes: int = Field(default=4 * MiB, ge=1024)
    predict_tasks: int = Field(default=10_000, ge=1)
    projects: int = Field(default=16, ge=1, description="label configs from /setup remembered, least recent dropped")

    ENV: ClassVar[dict[str, str]] = {
        "predict_bytes": "MINIGPT_MAX_PREDICT_BYTES",
        "webhook_bytes": "MINIGPT_MAX_WEBHOOK_BYTES",
        "setup_bytes": "MINIGPT_MAX_SETUP_BYTES",
        "predict_tasks": "MINIGPT_MAX_PREDICT_TASKS",
        "projects": "MINIGPT_MAX_PROJECTS",
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RequestLimits:
        return _from_env(cls, cls.ENV, env, {})

    def body_limit(self, path: str) -> tuple[int, str | None]:
        """The most bytes a body sent to `path` may have, and the variable that sets it (None: /propose's limit is
        the desktop client's contract, model.propose_api; other paths take no body, the server caps them)."""
        field = _BODY_LIMITS.get(path)
        if field is not None:
            return getattr(self, field), self.ENV[field]
        return (propose_api.MAX_BODY_BYTES if path == propose_api.PATH else self.largest_body), None

    @property
    def largest_body(self) -> int:
        """What the HTTP server buffers at most for any route; each route then applies its own limit."""
        return max(propose_api.MAX_BODY_BYTES, *(getattr(self, field) for field in _BODY_LIMITS.values()))


_BODY_LIMITS = {"/predict": "predict_bytes", "/webhook": "webhook_bytes", "/setup": "setup_bytes"}


class ServerSettings(BaseModel):
    """The HTTP server of `minigpt-annotate serve` (waitress): how many clients, how idle, how many at work.

    Waitress reads each request whole (headers and body) in one event loop before a worker thread sees it, so a
    client that sends slowly holds a socket, not a thread; `connection_limit` bounds those sockets, and one that is
    idle for `idle_timeout` seconds between requests is closed.
    """

    model_config = ConfigDict(frozen=True)

    threads: int = Field(default=8, ge=1, le=256)
    connection_limit: int = Field(default=256, ge=8)
    idle_timeout: int = Field(default=60, ge=1)
    max_header_bytes: int = Field(default=64 * 1024, ge=8 * 1024)

    ENV: ClassVar[dict[str, str]] = {
        "threads": "MINIGPT_THREADS",
        "connection_limit": "MINIGPT_CONNECTION_LIMIT",
        "idle_timeout": "MINIGPT_IDLE_TIMEOUT",
        "max_header_bytes": "MINIGPT_MAX_HEADER_BYTES",
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ServerSettings:
        return _from_env(cls, cls.ENV, env, {})


def configure_logging() -> None:
    """One log format for `serve` and any WSGI server importing ml_backend.wsgi; LOG_LEVEL picks the level."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


_proposers: dict[tuple[str, str, str], Proposer] = {}
_proposers_lock = threading.Lock()


def load_proposer(model: str, device: str = "auto", dtype: str = "auto") -> Proposer:
    """The model, loaded once per process however many apps or requests ask for it."""
    key = (model, device, dtype)
    with _proposers_lock:
        if key not in _proposers:
            _proposers[key] = Proposer.from_pretrained(model, device=device, dtype=dtype)
        return _proposers[key]


def build_backend(
    settings: BackendSettings,
    media: MediaSettings | None = None,
    limits: RequestLimits | None = None,
    *,
    rollback: bool = False,
) -> MiniGPTBackend:
    """The backend `settings` describe, serving the learned model a learning folder names if there is one (after
    going back one promotion with `rollback`), and learning with `settings.learn`."""
    state = _learning_state(settings, rollback)
    served = state.current if state is not None else None
    if served is not None and not Path(served.path).is_dir():
        raise MiniGPTError(
            f"the served learned model {served.version} is missing from {served.path}; restore the folder, or serve "
            "the model promoted before it with --rollback"
        )
    proposer = load_proposer(served.path if served else settings.model, settings.device, settings.dtype)
    # On a GPU, compile for a lone interactive prompt and for full chunks before the first request arrives.
    warm = proposer.warm_up((1, settings.batch_size))
    if warm:
        logging.getLogger(__name__).info("compiled the decoding step in %.1f s", warm)
    backend = MiniGPTBackend(
        proposer,
        MediaFetcher(media or MediaSettings.from_env()),
        corrections=CorrectionStore(settings.corrections_dir) if settings.corrections_dir else None,
        model_version=served.version if served else settings.model_version,
        score_threshold=settings.score_threshold,
        batch_size=settings.batch_size,
        max_projects=(limits or RequestLimits()).projects,
        predict_budget_s=settings.predict_budget_s,
        model_source=served.path if served else settings.model_source,
    )
    if settings.learn:
        assert state is not None and backend.corrections is not None and settings.learning_dir is not None
        recipe = settings.learn_recipe or recipe_path(CORRECTIONS)
        load_recipe(recipe, check_files=False)  # a broken recipe stops the start, not the first run hours later
        backend.learning = Learner(
            backend,
            backend.corrections,
            settings.learning_dir,
            state,
            every=settings.learn_every,
            holdout_percent=settings.learn_holdout,
            device=settings.device,
            recipe=recipe,
            train_args=settings.learn_args,
            load=lambda path, version: _warm(Proposer.from_pretrained(
                path, settings.device, settings.dtype, model_version=version), settings.batch_size),
        )  # fmt: skip
    return backend


def _warm(proposer: Proposer, batch_size: int) -> Proposer:
    proposer.warm_up((1, batch_size))
    return proposer


def _learning_state(settings: BackendSettings, rollback: bool) -> LearningState | None:
    """The learning folder's state when learning, rolling back, or when a learned model is being served."""
    learn_dir = settings.learning_dir
    if settings.learn and settings.corrections_dir is None:
        raise MiniGPTError("--learn needs --corrections DIR: it learns from the corrections stored there")
    if rollback:
        if learn_dir is None:
            raise MiniGPTError("--rollback needs --corrections DIR (or --learn-dir): where the learned models are")
        learned_models.rollback(learn_dir, settings.model_source, settings.base_version)
    if learn_dir is None or not (settings.learn or (learn_dir / learned_models.STATE_NAME).exists()):
        return None
    return learned_models.load_state(learn_dir, settings.model_source, settings.base_version)
