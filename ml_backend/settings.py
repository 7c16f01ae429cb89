"""The backend's settings (command line or environment) and building the backend from them, once per process."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from model.errors import MiniGPTError
from model.proposer import Proposer

from .backend import MiniGPTBackend
from .corrections import CorrectionStore
from .media import MediaFetcher, MediaSettings


class BackendSettings(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model: str = Field(description="model folder or hub id (MINIGPT_MODEL)")
    device: str = "auto"
    dtype: str = "auto"
    model_version: str | None = Field(default=None, description="shown in Label Studio; default: the folder name")
    corrections_dir: Path | None = Field(default=None, description="where webhooks store corrected boxes as COCO")
    score_threshold: float = Field(default=0.0, ge=0.0, le=1.0, description="boxes scoring lower are not suggested")
    batch_size: int = Field(default=16, ge=1)
    basic_auth_user: str | None = None
    basic_auth_pass: SecretStr | None = None

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
            "basic_auth_user": "BASIC_AUTH_USER",
            "basic_auth_pass": "BASIC_AUTH_PASS",
        }
        values: dict[str, object] = {key: env[name] for key, name in names.items() if env.get(name)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "model" not in values:
            raise MiniGPTError("no model given: set MINIGPT_MODEL to a model folder (or pass --model)")
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            problems = "; ".join(f"{names.get(str(e['loc'][0]), e['loc'][0])}: {e['msg']}" for e in err.errors())
            raise MiniGPTError(f"invalid backend settings: {problems}") from err

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        if self.basic_auth_user and self.basic_auth_pass:
            return self.basic_auth_user, self.basic_auth_pass.get_secret_value()
        return None


def configure_logging() -> None:
    """One log format for `serve` and gunicorn; LOG_LEVEL picks the level."""
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


def build_backend(settings: BackendSettings, media: MediaSettings | None = None) -> MiniGPTBackend:
    proposer = load_proposer(settings.model, settings.device, settings.dtype)
    # On a GPU, compile for a lone interactive prompt and for full chunks before the first request arrives.
    warm = proposer.warm_up((1, settings.batch_size))
    if warm:
        logging.getLogger(__name__).info("compiled the decoding step in %.1f s", warm)
    return MiniGPTBackend(
        proposer,
        MediaFetcher(media or MediaSettings.from_env()),
        corrections=CorrectionStore(settings.corrections_dir) if settings.corrections_dir else None,
        model_version=settings.model_version,
        score_threshold=settings.score_threshold,
        batch_size=settings.batch_size,
    )
