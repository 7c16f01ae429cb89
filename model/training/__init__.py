"""Training MiniGPT-v2: recipes (stages of dataset mixtures), instruction building, batching and the training loop.

The training loop and the recipe runner (torch, peft) are imported on first use, so that reading settings and
recipe files stays cheap.
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
from .recipe import Recipe, RecipeError, load_recipe

_TRAINER_NAMES = ("FinetuneError", "FinetuneResult", "Trainer", "TrainingData", "finetune")
_RUNNER_NAMES = ("train_recipe",)

__all__ = [
    "DEFAULT_TASKS",
    "TRAINABLE_TASKS",
    "FinetuneConfig",
    "FinetuneError",
    "FinetuneResult",
    "IdentifyAnswer",
    "InstructionSample",
    "Precision",
    "Recipe",
    "RecipeError",
    "TemplateChoice",
    "Trainer",
    "TrainingData",
    "blip_caption",
    "build_samples",
    "finetune",
    "load_recipe",
    "train_recipe",
]


def __getattr__(name: str) -> Any:
    if name in _TRAINER_NAMES:
        from . import trainer

        return getattr(trainer, name)
    if name in _RUNNER_NAMES:
        from . import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
