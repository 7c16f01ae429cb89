"""The tiny MiniGPT-v2 trained on synthetic shapes: the recipe that makes it, and the copy shipped in the package.

The real architecture at toy sizes (EVA tower, 4-token merge, projection, LLaMA), small enough to ship (< 8 MB) and
trained until it really finds shapes, so end-to-end tests check behaviour rather than random text.

The recipe mirrors how the real model came to be, in miniature (steps 2 and 3 are the recipe file
model/recipes/tiny-shapes.yaml, run by the same machinery as `minigpt-annotate train`):

1. *Vision pretraining.* The real EVA tower arrives pretrained. Ours learns from a dense objective on rendered
   scenes: for every patch, which shape covers it, its colour, its size and its box. The head is thrown away.
2. *One shape per image.* With the tower frozen (as in the official recipe), the projection and the LLM learn the
   task formats on single-shape scenes. Starting on scenes with several shapes, a model this small settles on
   answers that ignore the image (we measured it: the loss was identical with shuffled images).
3. *Several shapes per image,* with referring phrases, still with the tower frozen.

Everything is seeded: the same seed on the same machine gives the same weights.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import nn
from tqdm.auto import tqdm
from transformers import LlamaConfig

from ..errors import CheckpointError
from ..network import EvaVisionConfig, MiniGPTv2Config, MiniGPTv2ForConditionalGeneration
from ..processing import MiniGPTv2Processor
from ..recipes import SHAPES, recipe_path
from ..training.recipe import DatasetSpec, Recipe, Stage, load_recipe
from .shapes import CATEGORIES, COLOURS, SIZES, render_scene
from .tiny import _WORDS, build_tiny_tokenizer

SHIPPED_DIR = Path(__file__).parent / "assets" / "tiny-shapes"
RECIPE_FILE = "recipe.json"  # the report of the run that made the model
NOT_MODEL_FILES = ("train_recipe.json", "finetune_config.json", "result.json")
SHAPES_WORDS = (*_WORDS, "on")


class ShapesRecipe(BaseModel):
    """How the shapes model is made: vision pretraining here, then the instruction stages of a recipe file
    (model/recipes/tiny-shapes.yaml, run by the same `train` machinery as any recipe)."""

    seed: int = 0
    vision_steps: int = 2500
    vision_batch: int = 64
    training: Recipe = Field(default_factory=lambda: load_recipe(recipe_path(SHAPES)))

    def with_seed(self, seed: int) -> ShapesRecipe:
        """Seed `seed` everywhere: the recipe's seed, and `seed` added to each generated dataset's own."""
        stages = [
            stage.model_copy(
                update={"datasets": [_update_shapes(d, seed=d.shapes.seed + seed) for d in stage.datasets]}
            )
            for stage in self.training.stages
        ]
        training = self.training.model_copy(update={"seed": seed, "stages": stages})
        return self.model_copy(update={"seed": seed, "training": training})

    def scaled(self, total_steps: int) -> ShapesRecipe:
        """The same recipe with vision pretraining and every stage shrunk or stretched to about `total_steps` in all;
        warmups stay at most a tenth of their stage."""
        stages = self.training.stages
        ratio = total_steps / (self.vision_steps + sum(_steps(stage) for stage in stages))
        scaled = []
        for stage in stages:
            steps = max(1, round(_steps(stage) * ratio))
            warmup = min(stage.schedule.warmup_steps, steps // 10)
            schedule = stage.schedule.model_copy(update={"steps": steps, "warmup_steps": warmup})
            scaled.append(stage.model_copy(update={"schedule": schedule}))
        return self.model_copy(
            update={
                "vision_steps": max(1, round(self.vision_steps * ratio)),
                "training": self.training.model_copy(update={"stages": scaled}),
            }
        )

    def shrunk(self, images: int, batch_size: int) -> ShapesRecipe:
        """At most `images` scenes per dataset and micro-batches of `batch_size`: the recipe at test size."""
        stages = []
        for stage in self.training.stages:
            datasets = [_update_shapes(d, images=min(images, d.shapes.images)) for d in stage.datasets]
            schedule = stage.schedule.model_copy(update={"batch_size": batch_size})
            stages.append(stage.model_copy(update={"datasets": datasets, "schedule": schedule}))
        return self.model_copy(
            update={"vision_batch": batch_size, "training": self.training.model_copy(update={"stages": stages})}
        )


def _steps(stage: Stage) -> int:
    if stage.schedule.steps is None:
        raise ValueError(f"shapes recipe stage {stage.name!r} must give `steps`, not epochs")
    return stage.schedule.steps


def _update_shapes(spec: DatasetSpec, **changes) -> DatasetSpec:
    if spec.shapes is None:
        return spec
    return spec.model_copy(update={"shapes": spec.shapes.model_copy(update=changes)})


def shapes_model_config(vocab_size: int) -> MiniGPTv2Config:
    """64x64 input, 8x8 patches → 64 patches → 16 image tokens; about 1.5 M parameters."""
    vision = EvaVisionConfig(
        image_size=64,
        pretrain_image_size=64,
        patch_size=8,
        hidden_size=96,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=288,
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    return MiniGPTv2Config(vision_config=vision, text_config=text)


# --- stage 1: dense vision pretraining ---------------------------------------------------------------------------

_HEAD_SIZES = (len(CATEGORIES) + 1, len(COLOURS) + 1, len(SIZES) + 1, 4)  # class/colour/size with background, box


def _patch_targets(width: int, height: int, specs: list, grid: int) -> np.ndarray:
    """Per patch: (category, colour, size) indices (0 = background) and the covering shape's box in [0, 1]."""
    targets = np.zeros((grid, grid, 7), np.float32)
    categories, colours, sizes = list(CATEGORIES), list(COLOURS), list(SIZES)
    for spec in specs:
        x0, y0, x1, y1 = spec.box
        for row in range(grid):
            cy = (row + 0.5) / grid * height
            if not y0 <= cy < y1:
                continue
            for col in range(grid):
                cx = (col + 0.5) / grid * width
                if x0 <= cx < x1:
                    targets[row, col] = [
                        categories.index(spec.category) + 1,
                        colours.index(spec.colour) + 1,
                        sizes.index(spec.size) + 1,
                        x0 / width,
                        y0 / height,
                        x1 / width,
                        y1 / height,
                    ]
    return targets


def pretrain_vision(
    model: MiniGPTv2ForConditionalGeneration,
    processor: MiniGPTv2Processor,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    pool_size: int = 8192,
    progress: bool = False,
) -> list[float]:
    """Train the vision tower on the dense objective; returns the loss per step."""
    config = model.config.vision_config
    grid = config.image_size // config.patch_size
    rng = np.random.default_rng([seed, 17])
    # A fixed pool of rendered scenes, drawn once: rendering every batch afresh would dominate the step time.
    scenes = [render_scene(rng) for _ in range(min(steps * batch_size, pool_size))]
    all_pixels = processor.preprocess([image for image, _ in scenes])
    all_targets = torch.from_numpy(np.stack([_patch_targets(*image.size, specs, grid) for image, specs in scenes]))
    all_targets = all_targets.reshape(len(scenes), grid * grid, 7)
    order = torch.Generator().manual_seed(seed)
    head = nn.Linear(config.hidden_size, sum(_HEAD_SIZES))
    tower = model.vision_model
    tower.train()
    params = [*tower.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=1e-3, total_steps=steps, pct_start=0.1)
    losses = []
    for _ in tqdm(range(steps), desc="vision pretraining", unit="step", disable=not progress):
        pick = torch.randint(len(scenes), (batch_size,), generator=order)
        pixels, targets = all_pixels[pick], all_targets[pick]
        hidden = tower(pixels)[:, 1:]
        out = head(F.layer_norm(hidden, (hidden.shape[-1],)))
        n_cat, n_col, n_size, _ = _HEAD_SIZES
        heads = torch.split(out, _HEAD_SIZES, dim=-1)
        loss = sum(
            F.cross_entropy(logits.reshape(-1, n), targets[..., i].long().reshape(-1))
            for i, (logits, n) in enumerate(zip(heads[:3], (n_cat, n_col, n_size), strict=True))
        )
        foreground = targets[..., 0] > 0
        if foreground.any():
            loss = loss + 10 * F.l1_loss(heads[3][foreground], targets[..., 3:][foreground])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    tower.requires_grad_(False)
    return losses


# --- the whole recipe ----------------------------------------------------------------------------------------------


def train_tiny_shapes(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    steps: int | None = None,
    recipe: ShapesRecipe | None = None,
    progress: bool = False,
) -> dict:
    """Train the shapes model from scratch into `out`; returns what was done and measured (also in recipe.json)."""
    from ..training.runner import train_recipe  # the training loop pulls in peft; only needed here

    recipe = (recipe or ShapesRecipe()).with_seed(seed)
    if steps is not None:
        recipe = recipe.scaled(steps)
    out = Path(out)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    torch.manual_seed(recipe.seed)
    tokenizer = build_tiny_tokenizer(list(SHAPES_WORDS), number_tokens=True)
    config = shapes_model_config(len(tokenizer))
    model = MiniGPTv2ForConditionalGeneration(config)
    processor = MiniGPTv2Processor.for_model(tokenizer, config)

    with tempfile.TemporaryDirectory(prefix="tiny-shapes-") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        vision_losses = pretrain_vision(
            model,
            processor,
            steps=recipe.vision_steps,
            batch_size=recipe.vision_batch,
            seed=recipe.seed,
            progress=progress,
        )
        model.save_pretrained(work / "vision")
        processor.save_pretrained(work / "vision")
        timings["vision"] = time.perf_counter() - t

        t = time.perf_counter()
        result = train_recipe(
            recipe.training, work / "instruction", base=work / "vision", device="cpu", progress=progress
        )
        timings["instruction"] = time.perf_counter() - t
        losses = {name: [r.first_loss or 0.0, r.final_loss or 0.0] for name, r in result.stages.items()}
        timings |= {name: r.seconds for name, r in result.stages.items()}

        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for item in (work / "instruction").iterdir():
            if item.is_file() and item.name not in NOT_MODEL_FILES:
                shutil.copy2(item, out / item.name)

    report = {
        "recipe": recipe.model_dump(mode="json"),
        "parameters": sum(p.numel() for p in model.parameters()),
        "weights_bytes": (out / "model.safetensors").stat().st_size,
        "seconds": {k: round(v, 1) for k, v in timings.items()} | {"total": round(time.perf_counter() - started, 1)},
        "vision_loss": [vision_losses[0], vision_losses[-1]],
        "loss_first_last": losses,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    (out / RECIPE_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def write_trained_tiny(out: str | os.PathLike) -> Path:
    """Copy the shipped shapes model to `out`."""
    if not (SHIPPED_DIR / "model.safetensors").is_file():
        raise CheckpointError(
            f"the shipped shapes model is missing from {SHIPPED_DIR}; reinstall the package, or rebuild it with "
            "`minigpt-annotate make-tiny --train-shapes --out DIR`"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for item in SHIPPED_DIR.iterdir():
        if item.is_file():
            shutil.copy2(item, out / item.name)
    return out
