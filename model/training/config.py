"""Fine-tuning settings. Defaults follow the released stage-3 config (the official MiniGPT-4 repository,
train_configs/minigptv2_finetune.yaml)."""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..annotations import Task
from ..results import Seed
from .instructions import DEFAULT_TASKS, IdentifyAnswer, TemplateChoice, trainable_tasks


class Precision(str, Enum):
    auto = "auto"  # bf16 autocast on a GPU that supports it, fp32 elsewhere
    fp32 = "fp32"
    bf16 = "bf16"


# Settings that change what the weights mean; a resumed run must agree with the checkpoint on all of them.
RESUME_KEYS = (
    "tasks",
    "templates",
    "identify_answer",
    "detection_negatives",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "train_projection",
    "train_llm",
    "train_vision",
    "learning_rate",
    "min_lr",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "epochs",
    "max_steps",
    "batch_size",
    "grad_accum",
    "seed",
)


class FinetuneConfig(BaseModel):
    # allow_inf_nan=False: an infinite learning rate or epoch count is a typo, refused before the model loads.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # How samples are built (tasks … detection_negatives) applies to a run on one Dataset (`finetune`); a recipe
    # sets it per dataset instead (model/training/recipe.py: DatasetSpec).
    tasks: list[Task] = Field(default_factory=lambda: list(DEFAULT_TASKS))
    templates: TemplateChoice = TemplateChoice.pool
    identify_answer: IdentifyAnswer = IdentifyAnswer.category
    detection_negatives: bool = Field(
        False, description="also train [detection] of absent categories to answer nothing (not in the official data)"
    )

    lora_r: int = Field(64, ge=0, description="LoRA rank on the LLM; 0 turns LoRA off")
    lora_alpha: float = Field(16.0, gt=0)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    train_projection: bool = True
    train_llm: bool = Field(False, description="tune every LLM weight (instead of, or as well as, LoRA)")
    train_vision: bool = Field(False, description="unfreeze the vision tower; the official recipe keeps it frozen")

    learning_rate: float = Field(1e-5, gt=0)
    min_lr: float = Field(1e-6, ge=0)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, gt=0, description="optimizer steps; overrides epochs when set")
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=8, description="tokens per sample, image placeholders included")
    seed: Seed = 42  # the trainer seeds torch with seed * 1_000_003 + step, which this range keeps in bounds

    precision: Precision = Precision.auto
    save_every: int = Field(200, ge=1, description="optimizer steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1)
    cache_bytes: int = Field(2 * 1024**3, ge=0, description="memory for cached per-image tensors")
    merge: bool = Field(False, description="write a merged model instead of LoRA adapters + a pointer to the base")

    @field_validator("tasks")
    @classmethod
    def _trainable(cls, tasks: list[Task]) -> list[Task]:
        return trainable_tasks(tasks)

    @model_validator(mode="after")
    def _something_trains(self) -> FinetuneConfig:
        if not (self.lora_r or self.train_projection or self.train_llm or self.train_vision):
            raise ValueError("nothing to train: enable LoRA (lora_r > 0), the projection, the LLM or the vision tower")
        if self.min_lr > self.learning_rate:
            raise ValueError(f"min_lr {self.min_lr:g} is above learning_rate {self.learning_rate:g}; lower min_lr")
        return self

    @property
    def uses_lora(self) -> bool:
        return self.lora_r > 0 and not self.train_llm

    def resume_view(self) -> dict:
        return self.model_dump(mode="json", include=set(RESUME_KEYS))
