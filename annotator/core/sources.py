"""Where the model runs: a local model folder (in this process, on the GPU when there is one) or a remote
``minigpt-annotate serve``. Remembered in the project store as one line, so reopening reconnects."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from model.errors import MiniGPTError

from .engines import Engine, LocalEngine, RemoteEngine


@dataclass(frozen=True)
class ModelSource:
    kind: Literal["local", "server"]
    location: str  # a model folder or hub id; or the server's URL
    device: str = "auto"  # local only

    def open(self, env: Mapping[str, str] = os.environ) -> Engine:
        """Load the model or connect to the server; slow, so the GUI calls it from a worker thread.

        A server behind basic auth takes its user and password from ``MINIGPT_SERVER_USER`` and
        ``MINIGPT_SERVER_PASSWORD``, so the password never lands in the project store.
        """
        if self.kind == "local":
            return LocalEngine.load(self.location, device=self.device)
        user, password = env.get("MINIGPT_SERVER_USER"), env.get("MINIGPT_SERVER_PASSWORD")
        return RemoteEngine.connect(self.location, auth=(user, password or "") if user else None)

    def anchored(self) -> ModelSource:
        """The same source with a local folder named relative to the working directory made absolute, so that the
        project remembers a folder that opens from anywhere; hub ids and server URLs stay as they are."""
        path = Path(self.location).expanduser()
        if self.kind != "local" or path.is_absolute() or not path.exists():
            return self
        return replace(self, location=str(path.resolve()))

    def describe(self) -> str:
        return f"model {self.location}" if self.kind == "local" else f"server {self.location}"

    def to_setting(self) -> str:
        return f"{self.kind}:{self.device}:{self.location}" if self.kind == "local" else f"server::{self.location}"

    @classmethod
    def from_setting(cls, text: str) -> ModelSource:
        kind, device, location = text.split(":", 2)
        if kind not in ("local", "server") or not location:
            raise MiniGPTError(f"unknown model source {text!r}; choose a model again from the Model menu")
        return cls(kind=kind, location=location, device=device or "auto")  # type: ignore[arg-type]
