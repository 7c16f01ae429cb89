"""The fine-tuning loop: frozen vision tower, trained projection + LoRA (or more), checkpoints and exact resume.

The order of samples, the template draws and dropout all derive from (seed, step), so a run resumed from a
checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from pydantic import BaseModel
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from ..annotations import Dataset, Task
from ..dataset_files import check_image_files
from ..errors import CheckpointError, MiniGPTError
from ..files import write_text_atomic
from ..network import MiniGPTv2ForConditionalGeneration
from ..processing import MiniGPTv2Processor
from ..proposer import check_model_source, peft_deprecations_silenced, resolve_device
from .batches import ImageCache, collate, load_pixels
from .config import FinetuneConfig, Precision
from .instructions import (
    DEFAULT_TASKS,
    IdentifyAnswer,
    InstructionSample,
    TemplateChoice,
    build_samples,
    task_counts,
)
from .sampler import EpochStream, MixtureSampler, stream_seed

log = logging.getLogger(__name__)

CONFIG_FILE = "finetune_config.json"
STATE_FILE = "trainer_state.json"
TRAINABLE_FILE = "trainable.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
CHECKPOINTS = "checkpoints"


class FinetuneError(MiniGPTError):
    """Fine-tuning cannot start or continue; the message says why and what to do."""


class FinetuneResult(BaseModel):
    output: Path
    steps: int
    samples_per_epoch: dict[str, int]
    first_loss: float | None
    final_loss: float | None
    seconds: float
    resumed_from: int | None = None
    drawn: dict[str, int] = {}  # micro-batches each dataset gave over the whole run


@dataclass(frozen=True)
class TrainingData:
    """One dataset of a stage as the trainer reads it: its share of the micro-batches and how its samples are built."""

    name: str
    dataset: Dataset
    ratio: float = 1.0
    tasks: tuple[Task, ...] = DEFAULT_TASKS
    templates: TemplateChoice = TemplateChoice.pool
    identify_answer: IdentifyAnswer = IdentifyAnswer.category
    detection_negatives: bool = False
    batch_size: int | None = None  # its micro-batch size, when not the stage's

    @classmethod
    def from_config(cls, dataset: Dataset, config: FinetuneConfig, name: str = "data") -> TrainingData:
        """The one dataset of a `finetune` run, built as its settings say."""
        options = (config.templates, config.identify_answer, config.detection_negatives)
        return cls(name, dataset, 1.0, tuple(config.tasks), *options)

    def samples(self, rng: random.Random) -> list[InstructionSample]:
        try:
            return build_samples(
                self.dataset,
                tasks=self.tasks,
                rng=rng,
                templates=self.templates,
                identify_answer=self.identify_answer,
                detection_negatives=self.detection_negatives,
            )
        except ValueError as err:
            raise FinetuneError(f"dataset {self.name!r}: {err}") from None


class _Schedule:
    """Which samples each micro-batch holds: a dataset drawn by ratio, then the next micro-batch of its stream, whose
    epoch e is a shuffled, freshly templated pass over that dataset (see :mod:`model.training.sampler`)."""

    def __init__(self, data: Sequence[TrainingData], config: FinetuneConfig) -> None:
        self.data = list(data)
        self.config = config
        self.sampler = MixtureSampler([d.ratio for d in self.data], config.seed)
        self.streams = []
        for position, item in enumerate(self.data):
            stream = EpochStream(partial(self._epoch_samples, position), item.batch_size or config.batch_size)
            if not stream.epoch_size:
                raise FinetuneError(
                    (f"dataset {item.name!r} " if len(self.data) > 1 else "the dataset ")
                    + "gives no training samples for tasks "
                    + ", ".join(t.value for t in item.tasks)
                    + "; it needs annotated images (and phrases or unique categories for refer)"
                )
            self.streams.append(stream)
        counts: dict[str, int] = {}
        for stream in self.streams:
            for task, n in task_counts(stream.samples(0)).items():
                counts[task] = counts.get(task, 0) + n
        self.counts = counts
        self.micro_per_epoch = sum(stream.micro_per_epoch for stream in self.streams)

    def _epoch_samples(self, position: int, epoch: int) -> list[InstructionSample]:
        rng = random.Random(stream_seed(self.config.seed, position, epoch))
        samples = self.data[position].samples(rng)
        rng.shuffle(samples)
        return samples

    @property
    def total_steps(self) -> int:
        if self.config.max_steps:
            return self.config.max_steps
        return max(1, math.ceil(self.config.epochs * self.micro_per_epoch / self.config.grad_accum))

    def micro_batch(self, index: int) -> list[InstructionSample]:
        draw = self.sampler.draw(index)
        return self.streams[draw.dataset].micro_batch(draw.position)

    def drawn(self, micro_batches: int) -> dict[str, int]:
        """Micro-batches each dataset gave to the first `micro_batches` of the stage."""
        counts = self.sampler.counts_before(micro_batches)
        return {d.name: int(n) for d, n in zip(self.data, counts, strict=True)}

    def summary(self) -> list[dict]:
        """What a resumed run must agree on about the data."""
        return [
            {"name": d.name, "ratio": d.ratio, "batch_size": d.batch_size, "images": len(d.dataset.images)}
            for d in self.data
        ]


def _load_base(
    base: str | os.PathLike, device: torch.device, dtype: torch.dtype
) -> tuple[MiniGPTv2ForConditionalGeneration, MiniGPTv2Processor]:
    check_model_source(base)
    try:
        model = MiniGPTv2ForConditionalGeneration.from_pretrained(base, dtype=dtype)
        processor = MiniGPTv2Processor.from_pretrained(base)
    except OSError as err:
        raise CheckpointError(f"cannot load base model {base}: {err}") from err
    return model.to(device), processor


def _prepare_trainable(model: MiniGPTv2ForConditionalGeneration, config: FinetuneConfig) -> nn.Module:
    """Freeze what the config keeps fixed; wrap with peft LoRA when asked. Returns the module to save."""
    model.requires_grad_(False)
    model.vision_model.requires_grad_(config.train_vision)
    model.language_model.requires_grad_(config.train_llm)
    model.llama_proj.requires_grad_(config.train_projection)
    if not config.uses_lora:
        return model
    from peft import LoraConfig, get_peft_model

    targets = "|".join(sorted(config.lora_targets))
    to_save = [
        name for name, on in (("llama_proj", config.train_projection), ("vision_model", config.train_vision)) if on
    ]
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        # Only the LLM's attention projections: EVA's blocks have their own `qkv` and must stay untouched.
        target_modules=rf".*language_model\..*\.({targets})",
        modules_to_save=to_save or None,
    )
    with peft_deprecations_silenced():
        return get_peft_model(model, lora)


def _inner(wrapper: nn.Module) -> MiniGPTv2ForConditionalGeneration:
    """The MiniGPT-v2 module, with LoRA layers injected when `wrapper` is a peft model."""
    if isinstance(wrapper, MiniGPTv2ForConditionalGeneration):
        return wrapper
    inner = wrapper.base_model.model  # type: ignore[union-attr]
    assert isinstance(inner, MiniGPTv2ForConditionalGeneration)
    return inner


def _trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in module.named_parameters() if p.requires_grad}


def _param_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    # As the official optimizer: no decay for biases, norms and 1-d parameters.
    decay, plain = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or any(key in name for key in ("bias", "norm", "ln")):
            plain.append(param)
        else:
            decay.append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def _uses_bf16(device: torch.device, precision: Precision) -> bool:
    return precision is Precision.bf16 or (
        precision is Precision.auto and device.type == "cuda" and torch.cuda.is_bf16_supported()
    )


def _autocast(device: torch.device, precision: Precision):
    return torch.autocast(device.type, dtype=torch.bfloat16) if _uses_bf16(device, precision) else nullcontext()


def _checkpoints(out: Path) -> list[Path]:
    root = out / CHECKPOINTS
    found = [p for p in root.glob("step-*") if p.is_dir() and (p / STATE_FILE).exists()] if root.exists() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _check_resume(out: Path, config: FinetuneConfig, base: str, data: list[dict]) -> None:
    saved_file = out / CONFIG_FILE
    if not saved_file.exists():
        raise FinetuneError(f"nothing to resume in {out}: no {CONFIG_FILE}; start a new run without --resume")
    saved = json.loads(saved_file.read_text())
    mine = config.resume_view()
    diffs = [f"{k}: {saved['config'].get(k)!r} → {v!r}" for k, v in mine.items() if saved["config"].get(k) != v]
    if saved.get("base") != base:
        diffs.insert(0, f"base: {saved.get('base')!r} → {base!r}")
    if "data" in saved and saved["data"] != data:  # older runs did not record it
        diffs.append(f"data: {saved['data']!r} → {data!r}")
    if diffs:
        raise FinetuneError(
            f"cannot resume {out}: the settings differ from the interrupted run ({'; '.join(diffs)}); "
            "use the same settings, or a new output folder"
        )


def _base_reference(base: str | os.PathLike) -> str:
    # A local folder is stored absolute so that adapters still find their base from anywhere.
    path = Path(base)
    return str(path.resolve()) if path.exists() else str(base)


class Trainer:
    """One fine-tuning run into `out`. `run()` trains (or resumes), checkpoints, and writes the final model."""

    def __init__(
        self,
        data: Dataset | Sequence[TrainingData],
        base: str | os.PathLike,
        out: str | os.PathLike,
        config: FinetuneConfig | None = None,
        *,
        resume: bool = False,
        device: str | torch.device | None = "auto",
        progress: bool = True,
        on_step: Callable[[int, float], None] | None = None,
    ) -> None:
        self.config = config or FinetuneConfig()
        self.base = _base_reference(base)
        self.out = Path(out)
        self.resume = resume
        if isinstance(data, Dataset):
            data = [TrainingData.from_config(data, self.config)]
        self.schedule = _Schedule(data, self.config)
        # Settle what happens to the output folder before the (possibly minutes-long) model load.
        if resume:
            _check_resume(self.out, self.config, self.base, self.schedule.summary())
        elif _checkpoints(self.out):
            raise FinetuneError(f"{self.out} already holds checkpoints of a run; pass --resume or choose a new folder")
        self.device = resolve_device(device)
        self.progress = progress
        self.on_step = on_step
        # Every image a step will read, and every annotated one (with a wrong size its boxes may quantise to nothing
        # and give no sample), checked against its file now, as `evaluate` does: not at step 3,000.
        for item, stream in zip(self.schedule.data, self.schedule.streams, strict=True):
            used = {sample.image_path for sample in stream.samples(0)}  # every epoch reads the same images
            records = item.dataset.images
            checked = [i for i, record in enumerate(records) if record.annotations or record.path in used]
            check_image_files(item.dataset, indices=checked)
        frozen_llm_dtype = (
            torch.bfloat16
            if _uses_bf16(self.device, self.config.precision)
            and not (self.config.train_llm or self.config.train_vision)
            else None
        )
        self.model, self.processor = _load_base(base, self.device, frozen_llm_dtype or torch.float32)
        torch.manual_seed(self.config.seed)  # LoRA's random init
        self.wrapper = _prepare_trainable(self.model, self.config)
        for param in self.wrapper.parameters():
            if param.requires_grad and param.dtype != torch.float32:
                param.data = param.data.float()  # optimizer state and updates in fp32, even over a bf16 base
        self.inner = _inner(self.wrapper)
        self.optimizer = torch.optim.AdamW(
            _param_groups(self.wrapper, self.config.weight_decay), lr=self.config.learning_rate, betas=(0.9, 0.999)
        )
        self.scheduler = get_cosine_with_min_lr_schedule_with_warmup(
            self.optimizer,
            num_warmup_steps=min(self.config.warmup_steps, self.schedule.total_steps),
            num_training_steps=self.schedule.total_steps,
            min_lr=self.config.min_lr,
        )
        self.images = ImageCache(self._image_inputs, self.config.cache_bytes)
        self.losses: list[float] = []
        self.step = 0

    # --- data --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _image_inputs(self, paths: list[Path]) -> torch.Tensor:
        """Pixels when the tower trains; otherwise its output, which a frozen tower makes constant per image."""
        pixels = load_pixels(paths, self.processor)
        if self.config.train_vision:
            return pixels
        with _autocast(self.device, self.config.precision):
            tokens = self.inner.get_vision_tokens(pixels.to(self.device))
        return tokens.float().cpu()

    def _loss(self, samples: Sequence[InstructionSample]) -> torch.Tensor:
        batch = collate(samples, self.processor, self.config.max_length)
        images = self.images.get(batch.image_paths).to(self.device)
        with _autocast(self.device, self.config.precision):
            tokens = self.inner.get_vision_tokens(images) if self.config.train_vision else images
            features = self.inner.project_vision_tokens(tokens)
            output = self.inner(
                input_ids=batch.input_ids.to(self.device),
                attention_mask=batch.attention_mask.to(self.device),
                image_features=features,
                labels=batch.labels.to(self.device),
            )
        return output.loss

    # --- checkpoints -------------------------------------------------------------------------------------------
    def _write_run_config(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        data = {"base": self.base, "config": self.config.model_dump(mode="json"), "data": self.schedule.summary()}
        write_text_atomic(self.out / CONFIG_FILE, json.dumps(data, indent=2) + "\n")

    def save_checkpoint(self) -> Path:
        root = self.out / CHECKPOINTS
        final = root / f"step-{self.step:07d}"
        tmp = root / f".tmp-step-{self.step:07d}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(_trainable_state(self.wrapper), str(tmp / TRAINABLE_FILE))
        torch.save(
            {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}, tmp / OPTIMIZER_FILE
        )
        # The sampler position (micro-batches drawn per dataset) follows from (seed, step); it is stored so that a
        # resume can check that the data still draws the same way.
        micro = self.step * self.config.grad_accum
        state = {
            "step": self.step,
            "losses": self.losses,
            "total_steps": self.schedule.total_steps,
            "sampler": {"micro_batches": micro, "drawn": self.schedule.drawn(micro)},
        }
        (tmp / STATE_FILE).write_text(json.dumps(state) + "\n")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in _checkpoints(self.out)[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self, path: Path) -> None:
        state = json.loads((path / STATE_FILE).read_text())
        weights = load_file(str(path / TRAINABLE_FILE))
        expected = {name for name, p in self.wrapper.named_parameters() if p.requires_grad}
        if set(weights) != expected:
            missing, extra = sorted(expected - set(weights)), sorted(set(weights) - expected)
            raise FinetuneError(
                f"checkpoint {path} does not match this model (missing {missing[:3]}, unexpected {extra[:3]}); "
                "resume with the same base model and settings"
            )
        params = dict(self.wrapper.named_parameters())
        with torch.no_grad():
            for name, tensor in weights.items():
                params[name].copy_(tensor)
        opt = torch.load(path / OPTIMIZER_FILE, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(opt["optimizer"])
        self.scheduler.load_state_dict(opt["scheduler"])
        sampler = state.get("sampler")
        micro = int(state["step"]) * self.config.grad_accum
        if sampler is not None and sampler["drawn"] != self.schedule.drawn(micro):
            raise FinetuneError(
                f"checkpoint {path} drew {sampler['drawn']} micro-batches per dataset, but this data draws "
                f"{self.schedule.drawn(micro)} up to the same step; resume with the same datasets and ratios"
            )
        self.step = int(state["step"])
        self.losses = [float(v) for v in state["losses"]]

    # --- the loop ----------------------------------------------------------------------------------------------
    def run(self) -> FinetuneResult:
        started = time.perf_counter()
        resumed_from = None
        found = _checkpoints(self.out) if self.resume else []
        if found:
            self.load_checkpoint(found[-1])
            resumed_from = self.step
            log.info("resumed from %s at step %d", found[-1], self.step)
        self._write_run_config()
        total = self.schedule.total_steps
        self.wrapper.train()
        if not self.config.train_vision:
            self.inner.vision_model.eval()
        bar = tqdm(total=total, initial=self.step, desc="fine-tuning", unit="step", disable=not self.progress)
        try:
            while self.step < total:
                loss = self._train_step()
                self.step += 1
                self.losses.append(loss)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                if self.on_step is not None:
                    self.on_step(self.step, loss)
                if self.step % self.config.save_every == 0 and self.step < total:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            if self.step > 0:
                where = self.save_checkpoint()
                log.warning("interrupted at step %d; saved %s, continue with --resume", self.step, where)
            raise
        finally:
            bar.close()
        self.save_checkpoint()
        self.save_model()
        return FinetuneResult(
            output=self.out,
            steps=self.step,
            samples_per_epoch=self.schedule.counts,
            first_loss=self.losses[0] if self.losses else None,
            final_loss=self.losses[-1] if self.losses else None,
            seconds=time.perf_counter() - started,
            resumed_from=resumed_from,
            drawn=self.schedule.drawn(self.step * self.config.grad_accum),
        )

    def _train_step(self) -> float:
        # Seeding per step makes dropout identical whether or not the run was resumed.
        torch.manual_seed(self.config.seed * 1_000_003 + self.step)
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        accum = self.config.grad_accum
        for micro in range(accum):
            loss = self._loss(self.schedule.micro_batch(self.step * accum + micro)) / accum
            loss.backward()
            total += float(loss.detach())
        if not math.isfinite(total):
            raise FinetuneError(
                f"the loss became {total} at step {self.step + 1}; lower --learning-rate, or check the data"
            )
        if self.config.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.wrapper.parameters() if p.requires_grad], self.config.max_grad_norm
            )
        self.optimizer.step()
        self.scheduler.step()
        return total

    # --- the result --------------------------------------------------------------------------------------------
    def save_model(self) -> None:
        """Adapters (+ processor) that point at the base, or a merged model that stands alone."""
        self.wrapper.eval()
        if self.config.uses_lora and not self.config.merge:
            self.wrapper.peft_config["default"].base_model_name_or_path = self.base  # type: ignore[union-attr]
            self.wrapper.save_pretrained(str(self.out))  # adapter_config.json records the base
            self.processor.save_pretrained(self.out)
            return
        model = self.wrapper.merge_and_unload() if self.config.uses_lora else self.wrapper  # type: ignore[operator]
        model.save_pretrained(str(self.out))
        self.processor.save_pretrained(self.out)


def finetune(
    dataset: Dataset | Sequence[TrainingData],
    base: str | os.PathLike,
    out: str | os.PathLike,
    config: FinetuneConfig | None = None,
    *,
    resume: bool = False,
    device: str | torch.device | None = "auto",
    progress: bool = True,
) -> FinetuneResult:
    """Fine-tune `base` on `dataset` into `out`; see :class:`Trainer`."""
    return Trainer(dataset, base, out, config, resume=resume, device=device, progress=progress).run()
