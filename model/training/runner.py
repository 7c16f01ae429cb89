"""Run a recipe: every stage in order, each a :class:`~model.training.trainer.Trainer` run over its dataset mixture,
from the model the previous stage wrote. `finetune` is the one-stage case (:func:`finetune_recipe`).

Layout of the output folder ``DIR``:

- ``train_recipe.json``: the resolved recipe this run follows (a resume must follow the same one);
- ``stages/NN-name/``: each stage's trainer folder (checkpoints, its model, ``result.json`` once it finished), and
  ``stages/NN-name/data/`` for datasets the stage generates. A one-stage recipe trains in ``DIR`` itself, which is
  the layout `finetune` has always written;
- the final model in ``DIR``: the last stage's files copied up, so ``--model DIR`` loads it.

A stage before the last writes a merged model when it trains LoRA, so that the next stage starts from plain weights
(and may train other parts). Resume skips the stages whose ``result.json`` exists and continues the first that has
none from its newest checkpoint (inside the stage, exactly: see :mod:`model.training.sampler`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from pydantic import BaseModel

from ..files import write_text_atomic
from .config import FinetuneConfig
from .recipe import DatasetKind, DatasetSpec, Recipe, RecipeError, Schedule, Stage, Trains
from .sources import load_dataset
from .trainer import CONFIG_FILE, FinetuneError, FinetuneResult, Trainer, TrainingData

log = logging.getLogger(__name__)

RECIPE_FILE = "train_recipe.json"
RESULT_FILE = "result.json"
STAGES = "stages"


class RecipeResult(BaseModel):
    output: Path
    stages: dict[str, FinetuneResult]


def stage_dir(out: Path, recipe: Recipe, index: int) -> Path:
    if len(recipe.stages) == 1:
        return out
    return out / STAGES / f"{index + 1:02d}-{recipe.stages[index].name}"


def stage_data(
    stage: Stage, work: Path, model: str | os.PathLike | None = None, device: str | torch.device | None = "auto"
) -> list[TrainingData]:
    """Read every dataset of a stage (generating shapes under `work`), ready for the trainer. A ``distill`` dataset
    is `model`'s own answers on its source's images (:mod:`model.training.distill`), asked once and kept in `work`."""
    loaded = {spec.name: load_dataset(spec, work) for spec in stage.datasets if spec.kind is not DatasetKind.distill}
    for spec in stage.datasets:
        if spec.kind is DatasetKind.distill:
            if model is None:
                raise RecipeError(f"dataset {spec.name!r}: a distill dataset needs the model the stage starts from")
            from .distill import distill_dataset

            assert spec.source is not None  # DatasetSpec requires it for kind distill
            loaded[spec.name] = distill_dataset(spec, loaded[spec.source], model, work, device=device)
    data = []
    for spec in stage.datasets:
        data.append(
            TrainingData(
                spec.name,
                loaded[spec.name],
                spec.ratio,
                tuple(spec.tasks),
                spec.templates,
                spec.identify_answer,
                spec.detection_negatives,
                spec.batch_size,
            )
        )
    return data


def _check_recipe(out: Path, recipe: Recipe, resume: bool) -> None:
    saved = out / RECIPE_FILE
    if resume and saved.exists():
        before, now = _leaves(json.loads(saved.read_text())), _leaves(recipe.model_dump(mode="json"))
        keys = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
        diffs = [f"{k}: {before.get(k)!r} → {now.get(k)!r}" for k in keys]
        if diffs:
            more = f" and {len(diffs) - 3} more" if len(diffs) > 3 else ""
            raise FinetuneError(
                f"cannot resume {out}: it was started with another recipe ({'; '.join(diffs[:3])}{more}); use the "
                "same recipe and settings, or a new output folder"
            )
    elif resume and not (out / CONFIG_FILE).exists():
        raise FinetuneError(f"nothing to resume in {out}: no {RECIPE_FILE}; start a new run without --resume")
    elif not resume and saved.exists():
        raise FinetuneError(f"{out} already holds a recipe run; pass --resume or choose a new folder")


def _leaves(data: object, prefix: str = "") -> dict[str, object]:
    """{"stages.0.schedule.lr": 1e-5, …}: a recipe's settings by path, to name what differs."""
    if isinstance(data, dict):
        items = data.items()
    elif isinstance(data, list):
        items = enumerate(data)
    else:
        return {prefix: data}
    out: dict[str, object] = {}
    for key, value in items:
        out |= _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    return out


def train_recipe(
    recipe: Recipe,
    out: str | os.PathLike,
    *,
    base: str | os.PathLike | None = None,
    resume: bool = False,
    device: str | torch.device | None = "auto",
    progress: bool = True,
    on_step: Callable[[str, int, float], None] | None = None,
) -> RecipeResult:
    """Run every stage of `recipe` (resolved: absolute dataset paths) into `out`, from `base` (or the recipe's)."""
    base = base if base is not None else recipe.base
    if base is None:
        raise RecipeError(f"recipe {recipe.name!r} names no base model; pass --base")
    out = Path(out)
    _check_recipe(out, recipe, resume)
    results: dict[str, FinetuneResult] = {}
    current: str | os.PathLike = base
    for index, stage in enumerate(recipe.stages):
        folder = stage_dir(out, recipe, index)
        last = index == len(recipe.stages) - 1
        done = folder / RESULT_FILE
        if resume and done.exists() and len(recipe.stages) > 1:
            results[stage.name] = FinetuneResult.model_validate_json(done.read_text())
            log.info("stage %s already done", stage.name)
            current = folder
            continue
        # A stage before the last hands plain weights on; the last writes what the recipe asks for.
        config = stage.config(recipe, merge=recipe.merge if last else True)
        data = stage_data(stage, folder / "data", current, device)
        stage_resume = resume and (folder / CONFIG_FILE).exists()
        step_hook = (lambda step, loss, name=stage.name: on_step(name, step, loss)) if on_step else None
        trainer = Trainer(
            data, current, folder, config, resume=stage_resume, device=device, progress=progress, on_step=step_hook
        )
        if index == 0 and not resume:
            out.mkdir(parents=True, exist_ok=True)
            write_text_atomic(out / RECIPE_FILE, recipe.model_dump_json(indent=2) + "\n")
        result = trainer.run()
        if len(recipe.stages) > 1:
            write_text_atomic(done, result.model_dump_json(indent=2) + "\n")
        results[stage.name] = result
        current = folder
        del trainer
    if len(recipe.stages) > 1:
        _publish(Path(current), out)
    return RecipeResult(output=out, stages=results)


def _publish(final: Path, out: Path) -> None:
    """The last stage's model files, copied into `out` so that it loads like any model folder."""
    for item in final.iterdir():
        if item.is_file() and item.name not in (CONFIG_FILE, RESULT_FILE):
            tmp = out / f".{item.name}.tmp"
            shutil.copy2(item, tmp)
            tmp.replace(out / item.name)


def finetune_recipe(coco: str | os.PathLike, images: str | os.PathLike | None, config: FinetuneConfig) -> Recipe:
    """`finetune`'s arguments as a one-stage recipe: one COCO dataset, the settings as its trainer's."""
    lora = None
    if config.lora_r > 0:
        lora = {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout}
        lora["targets"] = config.lora_targets
    spec = DatasetSpec(
        name="data",
        kind=DatasetKind.coco,
        path=str(Path(coco).absolute()),
        images=str(Path(images).absolute()) if images is not None else None,
        ratio=1.0,
        tasks=config.tasks,
        templates=config.templates,
        identify_answer=config.identify_answer,
        detection_negatives=config.detection_negatives,
    )
    schedule = Schedule(
        steps=config.max_steps,
        epochs=None if config.max_steps else config.epochs,
        lr=config.learning_rate,
        warmup_steps=config.warmup_steps,
        min_lr=config.min_lr,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        batch_size=config.batch_size,
        grad_accum=config.grad_accum,
    )
    trains = Trains(projection=config.train_projection, lora=lora, llm=config.train_llm, vision=config.train_vision)
    stage = Stage(name="finetune", datasets=[spec], trains=trains, schedule=schedule, max_length=config.max_length)
    return Recipe(
        name="finetune",
        seed=config.seed,
        stages=[stage],
        precision=config.precision,
        save_every=config.save_every,
        keep_checkpoints=config.keep_checkpoints,
        merge=config.merge,
    )
