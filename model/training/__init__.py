"""Fine-tuning MiniGPT-v2 on corrected COCO data: instruction building, batching and the training loop.

The training loop (torch, peft) is imported on first use, so that reading the settings stays cheap.
"""

from typing import Any

from .config import FinetuneConfig, Precision
from .instructions import (
    DEFAULT_TASKS,
    TRAINABLE_TASKS,
    IdentifyAnswer,
    InstructionSample,
    TemplateChoice,
    blip_caption,
    build_samples,
)

_TRAINER_NAMES = ("FinetuneError", "FinetuneResult", "Trainer", "finetune")

__all__ = [
    "DEFAULT_TASKS",
    "TRAINABLE_TASKS",
    "FinetuneConfig",
    "FinetuneError",
    "FinetuneResult",
    "IdentifyAnswer",
    "InstructionSample",
    "Precision",
    "TemplateChoice",
    "Trainer",
    "blip_caption",
    "build_samples",
    "finetune",
]


def __getattr__(name: str) -> Any:
    if name in _TRAINER_NAMES:
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
