"""The training subcommands of `minigpt-annotate`: `finetune` (one COCO file) and `train` (a recipe), both on the
one recipe runner (:mod:`model.training.runner`), and both able to end by calibrating the trained model's scores on
a held-out split (`--heldout`). Like `model.commands`, nothing heavy is imported at module level."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .commands import fitted_tasks, positive_int, request_progress, seed_arg, task_list
from .errors import MiniGPTError


def add_finetune_parser(sub: argparse._SubParsersAction, tasks: list[str]) -> None:
    from .training import DEFAULT_TASKS, FinetuneConfig, IdentifyAnswer, Precision, TemplateChoice

    d = FinetuneConfig()
    p = sub.add_parser(
        "finetune",
        help="fine-tune on a COCO file (stage-3 style: frozen vision tower, projection + LoRA)",
        description="Builds [detection], [refer] and [identify] instructions from COCO boxes (and their 'phrase' "
        "fields) and trains. Writes LoRA adapters that load with --model like any model folder, or a merged "
        "model with --merge. Interrupt it any time and continue with --resume.",
    )
    p.add_argument("coco", type=Path, help="COCO file with the corrected boxes")
    p.add_argument("--images", type=Path, default=None, help="images folder (default: the COCO file's folder)")
    p.add_argument("--base", required=True, help="model folder or hub id to start from")
    p.add_argument("--out", required=True, type=Path, help="output folder (checkpoints and the result)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--tasks", default=",".join(t.value for t in DEFAULT_TASKS), help="comma-separated")
    p.add_argument("--templates", default=d.templates.value, choices=[t.value for t in TemplateChoice])
    p.add_argument("--identify-answer", default=d.identify_answer.value, choices=[a.value for a in IdentifyAnswer])
    p.add_argument(
        "--detection-negatives",
        action="store_true",
        help="also teach [detection] to answer nothing for categories absent from an image (not official)",
    )
    p.add_argument("--lora-r", type=int, default=d.lora_r, help="LoRA rank; 0 turns LoRA off")
    p.add_argument("--lora-alpha", type=float, default=d.lora_alpha)
    p.add_argument("--lora-dropout", type=float, default=d.lora_dropout)
    p.add_argument("--lora-targets", default=",".join(d.lora_targets), help="LLM linear layers, comma-separated")
    p.add_argument("--freeze-projection", action="store_true", help="keep the vision→LLM projection fixed")
    p.add_argument("--full-llm", action="store_true", help="tune every LLM weight (needs far more memory)")
    p.add_argument("--train-vision", action="store_true", help="unfreeze the vision tower (not official)")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--min-lr", type=float, default=d.min_lr)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--max-steps", type=positive_int, default=None, help="optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--grad-accum", type=positive_int, default=d.grad_accum)
    p.add_argument("--max-length", type=positive_int, default=d.max_length)
    p.add_argument("--seed", type=seed_arg, default=d.seed)
    p.add_argument("--save-every", type=positive_int, default=d.save_every, help="steps between checkpoints")
    p.add_argument("--precision", default=d.precision.value, choices=[x.value for x in Precision])
    p.add_argument("--merge", action="store_true", help="write a merged model instead of adapters")
    _add_heldout_arguments(p)
    p.add_argument("--device", default="auto")


def _add_heldout_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--heldout",
        type=Path,
        default=None,
        metavar="COCO",
        help="after training, evaluate the model on these held-out boxes (not trained on; see `split`) and save "
        "its score calibration (calibration.json) and the report in --out",
    )
    p.add_argument("--heldout-images", type=Path, default=None, help="images of --heldout (default: its folder)")


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="run a training recipe: stages of dataset mixtures (see docs/recipes.md and model/recipes/)",
        description="Runs every stage of a recipe file (YAML or JSON) in order, each from the model the stage before "
        "wrote; the final model lands in --out. Interrupt it any time and continue, inside the stage it was in, "
        "with --resume.",
    )
    p.add_argument("recipe", type=Path, help="recipe file (.yaml, .yml or .json)")
    p.add_argument("--out", required=True, type=Path, help="output folder (stages, checkpoints and the result)")
    p.add_argument("--base", default=None, help="model folder or hub id to start from (default: the recipe's base)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--data-root", type=Path, default=None, help="folder the recipe's relative dataset paths start from")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="change one recipe field for this run, e.g. stages.corrections.schedule.steps=100 (repeatable; a "
        "list item by its name or index; VALUE read as YAML)",
    )
    _add_heldout_arguments(p)
    p.add_argument("--device", default="auto")


def cmd_finetune(args: argparse.Namespace) -> int:
    from .training import FinetuneConfig
    from .training.runner import finetune_recipe, train_recipe

    config = _one_line_errors(
        FinetuneConfig,
        tasks=task_list(args.tasks),
        templates=args.templates,
        identify_answer=args.identify_answer,
        detection_negatives=args.detection_negatives,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        lora_targets=[t.strip() for t in args.lora_targets.split(",") if t.strip()],
        train_projection=not args.freeze_projection,
        train_llm=args.full_llm,
        train_vision=args.train_vision,
        learning_rate=args.learning_rate,
        min_lr=args.min_lr,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        seed=args.seed,
        save_every=args.save_every,
        precision=args.precision,
        merge=args.merge,
    )
    # The one-stage case of `train`: the same runner, on a recipe built from these arguments.
    recipe = finetune_recipe(args.coco, args.images, config)
    heldout = _read_heldout(args)
    result = train_recipe(recipe, args.out, base=args.base, resume=args.resume, device=args.device)
    _calibrate_trained(args, heldout)
    print(result.stages["finetune"].model_dump_json(indent=2))
    return 0


def _read_heldout(args: argparse.Namespace):
    """The --heldout dataset, read (and so checked) before training starts, not after an hour of it."""
    from .coco import read_coco

    return read_coco(args.heldout, args.heldout_images) if args.heldout is not None else None


def _calibrate_trained(args: argparse.Namespace, heldout) -> None:
    """Evaluate the model just trained in --out on --heldout and save its calibration there."""
    if heldout is None:
        return
    from .evaluation.calibrate import HELDOUT_REPORT, calibrate_on_heldout
    from .evaluation.score_plots import plot_beside

    with request_progress("held-out evaluation") as progress:
        report, calibration, path = calibrate_on_heldout(
            args.out, heldout, source=str(args.heldout), device=args.device, on_progress=progress
        )
    plot_beside(report, args.out / HELDOUT_REPORT, f"{report.model_version} on {args.heldout.name}")
    rate = report.overall.acceptance_rate
    rate_text = "-" if rate is None else f"{rate:.3f}"
    fitted = fitted_tasks(calibration)
    print(f"held-out acceptance {rate_text}; calibration for {fitted} saved to {path}", file=sys.stderr)


def _one_line_errors(model: type, **fields: object):
    """`model(**fields)`, a pydantic validation error turned into one line naming the command-line flag."""
    from pydantic import ValidationError

    try:
        return model(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        flag = f"--{str(first['loc'][0]).replace('_', '-')}: " if first["loc"] else ""
        raise MiniGPTError(flag + first["msg"].removeprefix("Value error, ")) from None


def cmd_train(args: argparse.Namespace) -> int:
    from .training.recipe import load_recipe
    from .training.runner import train_recipe

    recipe = load_recipe(args.recipe, data_root=args.data_root, overrides=args.overrides)
    heldout = _read_heldout(args)
    result = train_recipe(recipe, args.out, base=args.base, resume=args.resume, device=args.device)
    _calibrate_trained(args, heldout)
    print(result.model_dump_json(indent=2))
    return 0


COMMANDS = {"finetune": cmd_finetune, "train": cmd_train}
