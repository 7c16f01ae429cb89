"""The core's subcommands of `minigpt-annotate` (propose, parse, convert, make-tiny, make-shapes, split, evaluate,
fetch-official; finetune and train are in `training_commands`), and the argument types every surface's subcommands
share.

Each package registers its own subcommands (`register`) and the composition root, `minigpt_annotate.cli`, puts them
under one parser. Nothing here imports torch at module level, so `minigpt-annotate --help` stays instant: each command
imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

from .annotations import Box, Task
from .errors import MiniGPTError
from .request import check_text
from .results import MAX_SEED

DTYPES = ("auto", "float32", "bfloat16", "float16")


def box_arg(text: str) -> Box:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if (
        len(values) != 4
        or not all(math.isfinite(v) for v in values)
        or not (values[0] < values[2] and values[1] < values[3])
    ):
        raise argparse.ArgumentTypeError(
            f"expected x0,y0,x1,y1 in pixels (finite numbers) with x0<x1 and y0<y1, got {text!r}"
        )
    return Box.from_xyxy(values)


MAX_INT_ARG = 2**31 - 1  # far above any real size, count or step number; larger ones overflow float arithmetic


def _shown(text: str) -> str:
    return text if len(text) <= 20 else f"{text[:20]}… ({len(text)} digits)"


def positive_int(text: str) -> int:
    value = int(text)
    if not 0 < value <= MAX_INT_ARG:
        raise argparse.ArgumentTypeError(f"must be a positive integer up to {MAX_INT_ARG:,}, got {_shown(text)}")
    return value


def seed_arg(text: str) -> int:
    """A seed every random generator takes (2**70 once failed inside torch, after the model had loaded)."""
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be an integer from 0 to {MAX_SEED:,}, got {_shown(text)}")
    return value


def text_arg(text: str) -> str:
    """Text the tokenizer takes: an argument that was not UTF-8 arrives with lone surrogates."""
    try:
        return check_text(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{err}; check the terminal's encoding (a UTF-8 locale)") from None


def missing_extra(what: str, extra: str, err: ImportError) -> MiniGPTError:
    """The error for a subcommand whose optional dependencies are not installed, with the install command."""
    return MiniGPTError(f"{what} needs its extra: pip install 'minigpt-annotate[{extra}]' ({err})")


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage mistakes get the same one-line cause as every other failure, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the core's subcommands; each parser's ``run`` default is the function that carries it out."""
    tasks = [t.value for t in Task]

    p = sub.add_parser("propose", help="ask the model about one image; boxes in original-image pixels")
    p.add_argument("image", help="image file")
    p.add_argument("--task", required=True, choices=tasks)
    p.add_argument("--query", type=text_arg, default=None, help="what to find or ask, e.g. 'red balloon'")
    p.add_argument("--box", type=box_arg, default=None, help="x0,y0,x1,y1 in pixels (task identify)")
    p.add_argument("--model", required=True, help="converted model folder or hub id")
    p.add_argument("--json", action="store_true", help="print JSON instead of a readable summary")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    p.add_argument("--max-new-tokens", type=positive_int, default=None)
    p.add_argument("--sample", action="store_true", help="sample like the official demo (T=0.6, top_p=0.9)")
    p.add_argument("--seed", type=seed_arg, default=None)
    p.add_argument("--official-double-bos", action="store_true", help="start with two BOS, as official inference")
    p.add_argument("--box-offset", type=float, default=0.0, help="grid→pixel offset; 0 is official, 0.5 centres")
    p.add_argument("--quantize", choices=["8bit", "4bit"], default=None, help="8-/4-bit LLM weights (CUDA, [lowmem])")

    p = sub.add_parser("parse", help="read model output text on stdin, print proposals JSON")
    p.add_argument("--width", type=positive_int, required=True)
    p.add_argument("--height", type=positive_int, required=True)
    p.add_argument("--task", choices=tasks, default=Task.detection.value)
    p.add_argument("--box-offset", type=float, default=0.0)

    p = sub.add_parser("convert", help="official eva_vit_g.pth + LLaMA-2 folder + MiniGPT-v2 .pth → one HF folder")
    p.add_argument("--eva", required=True, type=Path)
    p.add_argument("--llama", required=True, type=Path)
    p.add_argument("--minigptv2", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--image-size", type=positive_int, default=448)
    p.add_argument("--dtype", default="float16", choices=DTYPES[1:])
    p.add_argument("--allow-pickle", action="store_true", help="load .pth files that need pickle (trusted only)")

    p = sub.add_parser("make-tiny", help="write a tiny model folder (tokenizer included) for offline trials")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=seed_arg, default=0)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--trained", action="store_true", help="the shipped tiny model trained on synthetic shapes (finds them)"
    )
    kind.add_argument(
        "--train-shapes",
        action="store_true",
        help="retrain that model from scratch, deterministically for a seed (CPU, about half an hour)",
    )
    p.add_argument("--steps", type=positive_int, default=None, help="training steps for --train-shapes")

    p = sub.add_parser("make-shapes", help="write a synthetic shapes dataset (images + COCO with referring phrases)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--images", type=positive_int, default=200)
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--min-shapes", type=positive_int, default=1)
    p.add_argument("--max-shapes", type=positive_int, default=4)
    p.add_argument("--exif-fraction", type=float, default=0.2, help="share of EXIF-rotated JPEGs")
    p.add_argument(
        "--rename", default="", help="other category names, e.g. circle=disc,square=box (labels and phrases)"
    )

    p = sub.add_parser("split", help="split a COCO file by image into train and held-out files")
    p.add_argument("coco", type=Path)
    p.add_argument("--images", type=Path, default=None, help="images folder (default: the COCO file's folder)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of images held out")
    p.add_argument("--seed", type=seed_arg, default=0)
    p.add_argument("--out", type=Path, default=None, help="output folder (default: the COCO file's folder)")

    from . import training_commands  # it imports this module's argument types

    training_commands.add_finetune_parser(sub, tasks)
    training_commands.add_train_parser(sub)
    _add_evaluate_parser(sub)

    p = sub.add_parser("fetch-official", help="download the official files, then convert them")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--checkpoint", default="stage3", choices=["stage3", "demo"])
    p.add_argument("--llama-repo", default="meta-llama/Llama-2-7b-chat-hf")
    p.add_argument("--dtype", default="float16", choices=DTYPES[1:])
    for name, run in {**COMMANDS, **training_commands.COMMANDS}.items():
        sub.choices[name].set_defaults(run=run)


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a model on a COCO file: [refer] Acc@0.5, [detection] COCO AP, acceptance rate",
    )
    p.add_argument("coco", type=Path, help="COCO file with ground-truth boxes (and optional 'phrase' fields)")
    p.add_argument("--images", type=Path, default=None, help="images folder (default: the COCO file's folder)")
    p.add_argument("--model", required=True, help="model folder (full or adapters) or hub id")
    p.add_argument("--tasks", default="refer,detection", help="comma-separated: refer, detection")
    p.add_argument(
        "--categories",
        default="all",
        choices=["all", "present"],
        help="ask [detection] for every category on every image (all, what COCO AP assumes) or only present ones",
    )
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--max-images", type=positive_int, default=None)
    p.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    p.add_argument("--report", type=Path, default=None, help="also write the JSON report to this file")
    p.add_argument(
        "--calibrate",
        action="store_true",
        help="fit a calibration of the scores (raw score -> probability kept, per task) on these answers and save it "
        "as calibration.json in the model folder, where every later load applies it; evaluate on held-out data",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=DTYPES)


@contextlib.contextmanager
def request_progress(desc: str) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar over model requests, given as the ``on_progress(done, total)`` callback the evaluation takes."""
    from tqdm.auto import tqdm

    with tqdm(desc=desc, unit="request") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield progress


def fitted_tasks(calibration) -> str:
    """`refer (40 proposals), detection (90 proposals)`: what a saved calibration.json was fitted on."""
    return ", ".join(f"{task.value} ({c.n} proposals)" for task, c in calibration.tasks.items()) or "no task"


def task_list(text: str) -> list[Task]:
    try:
        return [Task(t.strip()) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise ValueError(f"--tasks: {err}; choose from {', '.join(t.value for t in Task)}") from None


def cmd_propose(args: argparse.Namespace) -> int:
    from .grammar import pixels_to_grid
    from .images import MODEL_FIT_PIXELS, load_image
    from .prompts import build_instruction
    from .proposer import GenerationOptions, Proposer

    # Check the image and the request before spending a minute loading a 7B model.
    image = load_image(args.image, fit_pixels=MODEL_FIT_PIXELS)
    box = pixels_to_grid(args.box, image.width, image.height) if args.box is not None else None
    build_instruction(args.task, args.query, box)
    options = GenerationOptions.demo(seed=args.seed) if args.sample else GenerationOptions(seed=args.seed)
    if args.max_new_tokens:
        options = options.model_copy(update={"max_new_tokens": args.max_new_tokens})
    proposer = Proposer.from_pretrained(
        args.model,
        device=args.device,
        dtype=args.dtype,
        official_double_bos=args.official_double_bos,
        box_offset=args.box_offset,
        quantization=args.quantize,
    )
    result = proposer.propose(image, args.task, args.query, args.box, options=options)
    if args.json:
        print(json.dumps(result.to_json_dict(), indent=2))
        return 0
    print(f"{result.image} ({result.width}x{result.height})  {result.prompt}")
    print(f"answer: {result.text}")
    for p in result.proposals:
        x0, y0, x1, y1 = p.box.xyxy
        print(f"  {p.label:<24} [{x0:.1f}, {y0:.1f}, {x1:.1f}, {y1:.1f}]  score {p.score:.3f}")
    if not result.proposals and Task(args.task).answers_with_boxes:
        print("  (no boxes in the answer)")
    return 0


def cmd_parse(args: argparse.Namespace) -> int:
    from .grammar import parse_boxes

    text = sys.stdin.read()
    parsed = parse_boxes(text, args.width, args.height, offset=args.box_offset)
    out = {
        "width": args.width,
        "height": args.height,
        "task": args.task,
        "text": text.strip(),
        # No model probabilities are available for pasted text, so score is null.
        "proposals": [{"label": b.phrase or args.task, "bbox": list(b.box.xyxy), "score": None} for b in parsed.boxes],
        "skipped": [{"text": s.text, "reason": s.reason} for s in parsed.skipped],
    }
    print(json.dumps(out, indent=2))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .proposer import resolve_dtype
    from .weights.official import convert

    out = convert(
        args.eva,
        args.llama,
        args.minigptv2,
        args.out,
        image_size=args.image_size,
        dtype=resolve_dtype(args.dtype, device=_cpu()),
        allow_pickle=args.allow_pickle,
    )
    print(f"wrote {out}")
    return 0


def cmd_make_tiny(args: argparse.Namespace) -> int:
    from .synthetic.shapes_model import train_tiny_shapes, write_trained_tiny
    from .synthetic.tiny import make_tiny

    if args.trained:
        write_trained_tiny(args.out)
        print(f"wrote the tiny model trained on synthetic shapes to {args.out}")
    elif args.train_shapes:
        report = train_tiny_shapes(args.out, seed=args.seed, steps=args.steps, progress=True)
        print(json.dumps(report, indent=2))
    else:
        make_tiny(args.out, seed=args.seed)
        print(f"wrote a tiny random model to {args.out}")
    return 0


def cmd_make_shapes(args: argparse.Namespace) -> int:
    from .synthetic.shapes import make_shapes

    path = make_shapes(
        args.out,
        images=args.images,
        seed=args.seed,
        min_shapes=args.min_shapes,
        max_shapes=args.max_shapes,
        exif_fraction=args.exif_fraction,
        names=_renames(args.rename),
        progress=True,
    )
    print(f"wrote {args.images} images and {path}")
    return 0


def _renames(text: str) -> dict[str, str]:
    pairs = [item.split("=", 1) for item in text.split(",") if item.strip()]
    if any(len(pair) != 2 or not pair[1].strip() for pair in pairs):
        raise ValueError(f"--rename: expected old=new pairs separated by commas, got {text!r}")
    return {old.strip(): new.strip() for old, new in pairs}


def cmd_split(args: argparse.Namespace) -> int:
    from .coco import read_coco, split_dataset, write_coco

    dataset = read_coco(args.coco, args.images)
    train, held_out = split_dataset(dataset, holdout=args.holdout, seed=args.seed)
    out = args.out or args.coco.parent
    images_dir = args.images or args.coco.parent
    for name, part in (("train", train), ("heldout", held_out)):
        write_coco(part, out / f"{args.coco.stem}.{name}.json", images_dir=images_dir)
        print(f"wrote {out / f'{args.coco.stem}.{name}.json'} ({len(part.images)} images)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .coco import read_coco
    from .evaluation.calibrate import save_calibration
    from .evaluation.runner import collect_predictions, evaluated_tasks, score_predictions
    from .evaluation.score_plots import plot_beside
    from .files import write_text_atomic
    from .proposer import Proposer

    dataset = read_coco(args.coco, args.images)
    tasks = evaluated_tasks(task_list(args.tasks))  # checked before the model load, which can take minutes
    if args.calibrate and not Path(args.model).is_dir():
        raise MiniGPTError(f"--calibrate saves calibration.json in the model folder; {args.model} is not a folder")
    if args.max_images is not None:
        dataset = dataset.model_copy(update={"images": dataset.images[: args.max_images]})
    proposer = Proposer.from_pretrained(args.model, device=args.device, dtype=args.dtype)
    started = time.perf_counter()
    with request_progress("evaluating") as progress:
        predictions = collect_predictions(
            proposer, dataset, tasks=tasks, batch_size=args.batch_size, categories=args.categories,
            on_progress=progress,
        )  # fmt: skip
    report = score_predictions(
        dataset, predictions, tasks=tasks, categories=args.categories, model_version=proposer.model_version,
        seconds=time.perf_counter() - started,
    )  # fmt: skip
    if args.report:
        write_text_atomic(args.report, report.to_json() + "\n")
        plot_beside(report, args.report, f"{proposer.model_version} on {args.coco.name}")
    print(report.to_json() if args.json else report.format_table())
    if args.calibrate:
        calibration, path = save_calibration(args.model, proposer, dataset, predictions, tasks, source=str(args.coco))
        print(f"calibration for {fitted_tasks(calibration)} saved to {path}", file=sys.stderr)
    return 0


def cmd_fetch_official(args: argparse.Namespace) -> int:
    from .proposer import resolve_dtype
    from .weights.fetch import fetch_official
    from .weights.official import convert

    files = fetch_official(args.out, checkpoint=args.checkpoint, llama_repo=args.llama_repo)
    out = convert(
        files["eva"],
        files["llama"],
        files["minigptv2"],
        args.out / "model",
        dtype=resolve_dtype(args.dtype, device=_cpu()),
    )
    print(f"wrote {out}")
    return 0


def _cpu():
    import torch

    return torch.device("cpu")


COMMANDS = {
    "propose": cmd_propose,
    "parse": cmd_parse,
    "convert": cmd_convert,
    "make-tiny": cmd_make_tiny,
    "make-shapes": cmd_make_shapes,
    "split": cmd_split,
    "evaluate": cmd_evaluate,
    "fetch-official": cmd_fetch_official,
}
