"""Where the model runs: a local model folder (in this process, on the GPU when there is one) or a remote
``minigpt-annotate serve``. Remembered in the project store as one line, so reopening reconnects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from model.errors import MiniGPTError

from .engines import Engine, LocalEngine, RemoteEngine


@dataclass(frozen=True)
class ModelSource:
    kind: Literal["local", "server"]
    location: str  # a model folder or hub id; or the server's URL
    device: str = "auto"  # local only

    def open(self) -> Engine:
        """Load the model or connect to the server; slow, so the GUI calls it from a worker thread."""
        if self.kind == "local":
            return LocalEngine.load(self.location, device=self.device)
        return RemoteEngine.connect(self.location)

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
