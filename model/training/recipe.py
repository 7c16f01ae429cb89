"""Training recipes as data: a YAML or JSON file of stages, each a mixture of datasets with sampling ratios, the tasks
built from each, what trains and its schedule. `minigpt-annotate train RECIPE --out DIR` runs one
(:mod:`model.training.runner`); docs/recipes.md documents the format with examples.

Every field is checked when the file loads, before any model or image does: a mistake is one line naming the stage,
the dataset and the fix. Relative paths are relative to the recipe file's folder (or to ``data_root`` when set).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..annotations import Task
from ..errors import MiniGPTError
from ..results import Seed
from .config import FinetuneConfig, Precision
from .instructions import DEFAULT_TASKS, IdentifyAnswer, TemplateChoice

RATIO_TOLERANCE = 1e-3  # ratios written as rounded percentages (33.3 %, 33.3 %, 33.4 %) still sum to 1


class RecipeError(MiniGPTError):
    """A recipe file cannot be used; the message names the place and the fix."""


class DatasetKind(str, Enum):
    """Where a dataset's images and boxes come from."""

    coco = "coco"  # a COCO file (`path`), images under `images` or the file's folder
    label_studio = "label_studio"  # a Label Studio JSON export (`path`), images found by name under `images`
    corrections = "corrections"  # the ML backend's corrections store folder (`path`), read from its annotations.json
    autolabel = "autolabel"  # an `autolabel` output folder (`path`), read from its proposals.coco.json
    shapes = "shapes"  # synthetic shapes, generated into the run folder from `shapes` settings
    distill = "distill"  # the stage's starting model's own confident answers on another dataset's images (`source`)


class ShapesData(BaseModel):
    """Settings of a generated shapes dataset (kind ``shapes``), as `make-shapes` takes them."""

    model_config = ConfigDict(extra="forbid")

    images: int = Field(200, ge=1, description="how many scenes")
    seed: Seed = Field(0, description="scene i depends only on (seed, i)")
    min_shapes: int = Field(1, ge=1)
    max_shapes: int = Field(4, ge=1)
    exif_fraction: float = Field(0.2, ge=0, le=1, description="share of EXIF-rotated JPEGs")
    rename: dict[str, str] = Field(default_factory=dict, description="other category names, e.g. {circle: disc}")

    @model_validator(mode="after")
    def _order(self) -> ShapesData:
        if self.min_shapes > self.max_shapes:
            raise ValueError(f"min_shapes {self.min_shapes} is more than max_shapes {self.max_shapes}")
        return self


class DatasetSpec(BaseModel):
    """One dataset of a stage: where it comes from, how often it is drawn, and which instructions it gives."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, description="unique within the stage; names its sample stream and its share")
    kind: DatasetKind
    path: str | None = Field(None, description="file or folder (all kinds but shapes); relative to the recipe")
    images: str | None = Field(
        None,
        description="images folder for coco, label_studio and autolabel (default: the file's folder; autolabel: "
        "where its run read them)",
    )
    shapes: ShapesData | None = Field(None, description="generation settings (kind shapes only)")
    ratio: float = Field(gt=0, description="share of the stage's micro-batches drawn from this dataset")
    batch_size: int | None = Field(None, ge=1, description="its micro-batch size (default: the stage's batch_size)")
    tasks: list[Task] = Field(
        default_factory=lambda: list(DEFAULT_TASKS), description="instruction tasks built from its annotations"
    )
    templates: TemplateChoice = TemplateChoice.pool
    identify_answer: IdentifyAnswer = IdentifyAnswer.category
    detection_negatives: bool = Field(False, description="[detection] of absent categories answers nothing")
    min_score: float | None = Field(
        None, ge=0, le=1, description="drop boxes scored below this (model proposals); boxes without a score stay"
    )
    source: str | None = Field(
        None, description="kind distill: the dataset of the same stage whose images the model answers on"
    )
    categories: list[str] | None = Field(
        None,
        description="kind distill: the categories asked with [detection] (default: the source dataset's)",
    )

    @field_validator("tasks")
    @classmethod
    def _some_tasks(cls, tasks: list[Task]) -> list[Task]:
        if not tasks:
            raise ValueError("list at least one task")
        return list(dict.fromkeys(tasks))

    @model_validator(mode="after")
    def _source(self) -> DatasetSpec:
        if self.kind is DatasetKind.distill:
            if not self.source:
                raise ValueError("a distill dataset needs a `source`: the dataset whose images the model answers on")
            if self.path is not None or self.shapes is not None:
                raise ValueError("a distill dataset is made by the model from its `source`: give no path or shapes")
        elif self.source is not None or self.categories is not None:
            raise ValueError(f"`source` and `categories` are for kind distill, not {self.kind.value}")
        elif self.kind is DatasetKind.shapes:
            if self.path is not None:
                raise ValueError("a shapes dataset is generated: give `shapes:` settings, not a path")
            self.shapes = self.shapes or ShapesData()
        else:
            if not self.path:
                raise ValueError(f"a {self.kind.value} dataset needs a `path`")
            if self.shapes is not None:
                raise ValueError(f"`shapes:` settings are for kind shapes, not {self.kind.value}")
        if self.images is not None and self.kind in (DatasetKind.corrections, DatasetKind.shapes, DatasetKind.distill):
            raise ValueError(f"`images` is not for a {self.kind.value} dataset: it keeps its own")
        return self


class LoraSpec(BaseModel):
    """LoRA adapters on the LLM's linear layers (the official recipe: r 64, alpha 16, on q_proj and v_proj)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    r: int = Field(64, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    targets: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)


class Trains(BaseModel):
    """What a stage updates. Everything else stays frozen."""

    model_config = ConfigDict(extra="forbid")

    projection: bool = Field(True, description="the vision→LLM linear projection")
    lora: LoraSpec | None = Field(default_factory=LoraSpec, description="LoRA on the LLM; null for none")
    llm: bool = Field(False, description="every LLM weight (then LoRA is not used)")
    vision: bool = Field(False, description="the vision tower (the official recipe keeps it frozen)")

    def anything(self) -> bool:
        return self.projection or self.lora is not None or self.llm or self.vision


class Schedule(BaseModel):
    """How long and how fast: AdamW with linear warmup then cosine decay to `min_lr`, as the official runner."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    steps: int | None = Field(None, ge=1, description="optimizer steps; or give epochs")
    epochs: float | None = Field(None, gt=0, description="passes over the stage's data (all datasets together)")
    lr: float = Field(1e-5, gt=0, description="peak learning rate")
    warmup_steps: int = Field(100, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    batch_size: int = Field(4, ge=1, description="samples per micro-batch; one micro-batch comes from one dataset")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")

    @model_validator(mode="after")
    def _length(self) -> Schedule:
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of `steps` or `epochs`")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr {self.min_lr} is above lr {self.lr}")
        return self


class Stage(BaseModel):
    """One training stage: a mixture of datasets, what trains, and its schedule. Stages run in order, each from the
    model the previous one produced, with a fresh optimizer and learning-rate cycle (as the official stages)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="names its folder")
    datasets: list[DatasetSpec] = Field(min_length=1)
    normalise: bool = Field(
        False, description="read ratios as weights and divide by their sum (the official configs' sample_ratio)"
    )
    trains: Trains = Field(default_factory=Trains)
    schedule: Schedule
    max_length: int = Field(1024, ge=8, description="tokens per sample, image placeholders included")

    @model_validator(mode="after")
    def _check(self) -> Stage:
        names = [d.name for d in self.datasets]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"dataset name(s) used twice: {', '.join(twice)}")
        for d in self.datasets:
            if d.kind is DatasetKind.distill:
                source = next((s for s in self.datasets if s.name == d.source), None)
                if source is None or source.kind is DatasetKind.distill:
                    others = ", ".join(s.name for s in self.datasets if s.kind is not DatasetKind.distill)
                    raise ValueError(
                        f"dataset {d.name!r}: source {d.source!r} is not a dataset of this stage; name one of: {others}"
                    )
        total = math.fsum(d.ratio for d in self.datasets)
        if not self.normalise and abs(total - 1.0) > RATIO_TOLERANCE:
            raise ValueError(
                f"dataset ratios sum to {total:g}, not 1; fix them, or set `normalise: true` to use them as weights"
            )
        if not self.trains.anything():
            raise ValueError("nothing trains: enable the projection, lora, the llm or the vision tower")
        return self

    @property
    def ratios(self) -> list[float]:
        total = math.fsum(d.ratio for d in self.datasets)
        return [d.ratio / total for d in self.datasets]

    def config(self, recipe: Recipe, *, merge: bool) -> FinetuneConfig:
        """The trainer's settings for this stage (sample-building options travel with each dataset instead)."""
        lora = self.trains.lora if not self.trains.llm else None
        s = self.schedule
        return FinetuneConfig(
            lora_r=lora.r if lora else 0,
            lora_alpha=lora.alpha if lora else 16.0,
            lora_dropout=lora.dropout if lora else 0.05,
            lora_targets=lora.targets if lora else ["q_proj", "v_proj"],
            train_projection=self.trains.projection,
            train_llm=self.trains.llm,
            train_vision=self.trains.vision,
            learning_rate=s.lr,
            min_lr=s.min_lr,
            warmup_steps=s.warmup_steps,
            weight_decay=s.weight_decay,
            max_grad_norm=s.max_grad_norm,
            epochs=s.epochs or 1.0,
            max_steps=s.steps,
            batch_size=s.batch_size,
            grad_accum=s.grad_accum,
            max_length=self.max_length,
            seed=recipe.seed,
            precision=recipe.precision,
            save_every=recipe.save_every,
            keep_checkpoints=recipe.keep_checkpoints,
            merge=merge,
        )


class Recipe(BaseModel):
    """A whole training run: the model to start from and the stages, in order."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    base: str | None = Field(None, description="model folder or hub id to start from; `train --base` overrides it")
    seed: Seed = Field(42, description="seeds LoRA's init, template draws, dataset draws and dropout")
    data_root: str | None = Field(None, description="folder relative dataset paths start from (default: the file's)")
    stages: list[Stage] = Field(min_length=1)
    precision: Precision = Precision.auto
    save_every: int = Field(200, ge=1, description="optimizer steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1)
    merge: bool = Field(False, description="the last stage writes a merged model instead of LoRA adapters")

    @model_validator(mode="after")
    def _unique_stages(self) -> Recipe:
        names = [s.name for s in self.stages]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"stage name(s) used twice: {', '.join(twice)}")
        return self

    def resolve(self, folder: str | os.PathLike) -> Recipe:
        """A copy with every relative dataset path made absolute from `data_root` (itself relative to `folder`)."""
        root = Path(folder)
        if self.data_root:
            root = root / Path(self.data_root).expanduser()

        def absolute(value: str | None) -> str | None:
            return None if value is None else str((root / Path(value).expanduser()).absolute())

        stages = [
            stage.model_copy(
                update={
                    "datasets": [
                        d.model_copy(update={"path": absolute(d.path), "images": absolute(d.images)})
                        for d in stage.datasets
                    ]
                }
            )
            for stage in self.stages
        ]
        return self.model_copy(update={"stages": stages, "data_root": str(root.absolute())})

    def check_files(self) -> None:
        """RecipeError naming the first dataset whose file or folder is missing (call on a resolved recipe)."""
        for stage in self.stages:
            for d in stage.datasets:
                for what, value in (("path", d.path), ("images", d.images)):
                    if value is not None and not Path(value).exists():
                        raise RecipeError(
                            f"stage {stage.name!r}, dataset {d.name!r}: {what} {value} not found; fix the path, or "
                            "set data_root (train --data-root) to the folder the datasets are in"
                        )


def _location(loc: tuple[Any, ...], data: Any) -> str:
    """`stage 'pretrain', dataset 'gqa', field ratio` from pydantic's location tuple."""
    parts, node = [], data
    for i, key in enumerate(loc):
        if isinstance(key, int) and isinstance(node, list) and key < len(node):
            node = node[key]
            kind = {"stages": "stage", "datasets": "dataset"}.get(str(loc[i - 1]) if i else "", "item")
            name = node.get("name") if isinstance(node, dict) else None
            parts[-1:] = [f"{kind} {name!r}" if name else f"{kind} {key + 1}"]
        else:
            node = node.get(key) if isinstance(node, dict) else None
            parts.append(str(key))
    return ", ".join(parts)


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    """Validate already-parsed recipe data; RecipeError with the first problem as one line."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = _location(first["loc"], data)
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "enum" and first["loc"][-1] == "kind":
            kinds = ", ".join(k.value for k in DatasetKind)
            message = f"unknown dataset kind {first.get('input')!r}; choose from {kinds}"
        elif first["type"] == "enum" and "tasks" in first["loc"]:
            message = f"unknown task {first.get('input')!r}; choose from {', '.join(t.value for t in Task)}"
        elif first["type"] == "extra_forbidden":
            message = "unknown field; check its spelling against docs/recipes.md"
        more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise RecipeError(f"{source}: {where + ': ' if where else ''}{message}{more}") from None


def load_recipe(
    path: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    check_files: bool = True,
    overrides: Sequence[str] = (),
):
    """Read, validate and resolve a recipe file (YAML or JSON). `data_root` overrides the file's own; each of
    `overrides` is a `PATH=VALUE` setting applied before validation (see `apply_overrides`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"recipe {path} not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"cannot read recipe {path}: {err}") from None
    data = apply_overrides(_parse_text(text, path), overrides)
    recipe = parse_recipe(data, path.name)
    if data_root is not None:
        recipe = recipe.model_copy(update={"data_root": str(Path(data_root).absolute())})
    recipe = recipe.resolve(path.parent.absolute())
    if check_files:
        recipe.check_files()
    return recipe


def _parse_text(text: str, path: Path) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:
            raise RecipeError(f"{path.name} is not valid JSON: {err}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise RecipeError(f"{path.name} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    except RecursionError:
        raise RecipeError(f"{path.name} is nested too deeply to be a recipe") from None


def apply_overrides(data: Any, overrides: Sequence[str]) -> Any:
    """`data` with each `PATH=VALUE` of `overrides` set (`train --set`): PATH is dot-separated field names, a list
    item named by its `name` or its index from 0 (`stages.corrections.schedule.steps=1`, `seed=7`); VALUE is read as
    YAML (`1e-3`, `true`, `[q_proj, v_proj]`). The result is validated like the file, so a wrong field or value
    gets the same one-line cause."""
    import copy

    import yaml

    data = copy.deepcopy(data)
    for setting in overrides:
        key, sep, text = setting.partition("=")
        parts = key.strip().split(".") if key.strip() else []
        if not sep or not parts or not all(parts):
            raise RecipeError(f"--set {setting!r}: expected PATH=VALUE, e.g. stages.corrections.schedule.steps=100")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            value = text  # a plain string that happens to look like broken YAML
        node = data
        for depth, part in enumerate(parts):
            last = depth == len(parts) - 1
            where = ".".join(parts[: depth + 1])
            if isinstance(node, dict):
                if last:
                    node[part] = value
                    continue
                child = node.setdefault(part, {})  # a section the file left out (e.g. `trains.lora`) is made
                if not isinstance(child, (dict, list)):
                    raise RecipeError(f"--set {setting!r}: {where} is a value, not a section")
                node = child
            elif isinstance(node, list):
                index = _item_index(node, part)
                if index is None:
                    names = ", ".join(str(i.get("name")) for i in node if isinstance(i, dict)) or "none"
                    raise RecipeError(f"--set {setting!r}: no item {part!r} in {where.rpartition('.')[0] or 'the list'}"
                                      f" (names: {names}; or an index from 0)")  # fmt: skip
                if last:
                    node[index] = value
                else:
                    node = node[index]
            else:
                raise RecipeError(f"--set {setting!r}: {where.rpartition('.')[0]} is a value, not a section")
    return data


def _item_index(items: list, part: str) -> int | None:
    """The index of the list item named `part`, else `part` read as an index."""
    for index, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return index
    return int(part) if part.isdigit() and int(part) < len(items) else None
