"""`minigpt-annotate`: one entry point with subcommands (contract in DESIGN.md).

Failures exit non-zero with a one-line cause on stderr and no traceback (set MINIGPT_DEBUG=1 to see it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .annotations import Box, Task
from .errors import MiniGPTError

DTYPES = ("auto", "float32", "bfloat16", "float16")


def _box_arg(text: str) -> Box:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 4 or not (values[0] < values[2] and values[1] < values[3]):
        raise argparse.ArgumentTypeError(f"expected x0,y0,x1,y1 in pixels with x0<x1 and y0<y1, got {text!r}")
    return Box.from_xyxy(values)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


class OneLineErrorParser(argparse.ArgumentParser):
    """Usage mistakes get the same one-line cause as every other failure, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="minigpt-annotate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tasks = [t.value for t in Task]

    p = sub.add_parser("propose", help="ask the model about one image; boxes in original-image pixels")
    p.add_argument("image", help="image file")
    p.add_argument("--task", required=True, choices=tasks)
    p.add_argument("--query", default=None, help="what to find or ask, e.g. 'red balloon'")
    p.add_argument("--box", type=_box_arg, default=None, help="x0,y0,x1,y1 in pixels (task identify)")
    p.add_argument("--model", required=True, help="converted model folder or hub id")
    p.add_argument("--json", action="store_true", help="print JSON instead of a readable summary")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 …")
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    p.add_argument("--max-new-tokens", type=_positive_int, default=None)
    p.add_argument("--sample", action="store_true", help="sample like the official demo (T=0.6, top_p=0.9)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--official-double-bos", action="store_true", help="start with two BOS, as official inference")
    p.add_argument("--box-offset", type=float, default=0.0, help="grid→pixel offset; 0 is official, 0.5 centres")

    p = sub.add_parser("parse", help="read model output text on stdin, print proposals JSON")
    p.add_argument("--width", type=_positive_int, required=True)
    p.add_argument("--height", type=_positive_int, required=True)
    p.add_argument("--task", choices=tasks, default=Task.detection.value)
    p.add_argument("--box-offset", type=float, default=0.0)

    p = sub.add_parser("convert", help="official eva_vit_g.pth + LLaMA-2 folder + MiniGPT-v2 .pth → one HF folder")
    p.add_argument("--eva", required=True, type=Path)
    p.add_argument("--llama", required=True, type=Path)
    p.add_argument("--minigptv2", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--image-size", type=_positive_int, default=448)
    p.add_argument("--dtype", default="float16", choices=DTYPES[1:])
    p.add_argument("--allow-pickle", action="store_true", help="load .pth files that need pickle (trusted only)")

    p = sub.add_parser("make-tiny", help="write a tiny random model folder (tokenizer included) for offline trials")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("fetch-official", help="download the official files, then convert them")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--checkpoint", default="stage3", choices=["stage3", "demo"])
    p.add_argument("--llama-repo", default="meta-llama/Llama-2-7b-chat-hf")
    p.add_argument("--dtype", default="float16", choices=DTYPES[1:])
    return parser


def cmd_propose(args: argparse.Namespace) -> int:
    from .grammar import pixels_to_grid
    from .images import load_image
    from .prompts import build_instruction
    from .proposer import GenerationOptions, Proposer

    # Check the image and the request before spending a minute loading a 7B model.
    image = load_image(args.image)
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
    from .checkpoints import convert
    from .proposer import resolve_dtype

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
    from .tiny import make_tiny

    make_tiny(args.out, seed=args.seed)
    print(f"wrote a tiny random model to {args.out}")
    return 0


def cmd_fetch_official(args: argparse.Namespace) -> int:
    from .checkpoints import convert
    from .fetch import fetch_official
    from .proposer import resolve_dtype

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
    "fetch-official": cmd_fetch_official,
}


def _quiet_libraries() -> None:
    # stdout is for results (often JSON). Library warnings are noise for a user; transformers' loading progress
    # bars stay, on stderr, because loading a 7B model takes a while.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _quiet_libraries()
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("minigpt-annotate: interrupted", file=sys.stderr)
        return 130
    except (MiniGPTError, OSError, ValueError) as err:
        if os.environ.get("MINIGPT_DEBUG"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"minigpt-annotate: error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
