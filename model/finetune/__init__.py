"""Fine-tuning MiniGPT-v2 on corrected COCO data: instruction building, batching and the training loop."""

from .config import FinetuneConfig, Precision
from .instructions import (
    TRAINABLE_TASKS,
    IdentifyAnswer,
    InstructionSample,
    TemplateChoice,
    blip_caption,
    build_samples,
)
from .trainer import FinetuneError, FinetuneResult, Trainer, finetune

__all__ = [
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
