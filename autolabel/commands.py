"""`minigpt-annotate autolabel`: registered by the composition root (`minigpt_annotate.cli`).

Only the standard library and `model.commands` are imported here, so `--help` works without loading torch; the run
itself is imported when the command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from model.commands import DTYPES
from model.errors import MiniGPTError

ENGINES = ("local", "ray")  # ray: autolabel.ray_engine, on Ray Data (the "scale" extra)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "autolabel",
        help="propose boxes for a whole dataset, headless and resumable",
        description="Asks the model about every image of SOURCE (a folder, a COCO file, a Label Studio JSON export, "
        'or a JSONL manifest of {"image": ..., "labels"|"phrases": [...]} lines) and writes, in DIR, '
        "proposals.coco.json, label-studio-tasks.json (with predictions), label-config.xml, failures.jsonl and "
        "summary.json. Every finished image is committed to DIR/journal.sqlite first: after a crash, the same "
        "command resumes where it stopped. The summary JSON is printed on stdout.",
    )
    p.add_argument("source", type=Path, help="folder, COCO .json, Label Studio export .json, or manifest .jsonl")
    p.add_argument("--model", default=os.environ.get("MINIGPT_MODEL"), help="model folder or hub id")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (holds the journal)")
    asked = p.add_mutually_exclusive_group()
    asked.add_argument("--labels", default=None, help='labels to find, comma-separated: "car,person"')
    asked.add_argument("--label-config", type=Path, default=None, help="a Label Studio labeling config (XML)")
    p.add_argument("--task", choices=("detection", "refer"), default="detection", help="refer: the manifest's phrases")
    p.add_argument("--root", type=Path, default=None, help="folder Label Studio's /data/local-files/?d= paths are in")
    p.add_argument("--image-key", default=None, help="task data key of the image (default: the config's, or image)")
    p.add_argument("--engine", choices=ENGINES, default="local", help="ray: Ray Data (pip install '.[scale]')")
    p.add_argument(
        "--actors", type=int, default=None, help="ray: model copies (default: one per GPU of the cluster, else 1)"
    )
    p.add_argument(
        "--ray-address", default=None, help="ray: join this cluster (HOST:6379, ray://HOST:10001); default: a local Ray"
    )
    p.add_argument("--batch-images", type=int, default=4, help="images answered together (all their prompts)")
    p.add_argument("--model-version", default=None, help="the version recorded with every box (default: folder name)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    p.add_argument("--quiet", action="store_true", help="log lines instead of a progress bar")
    p.set_defaults(run=cmd_autolabel)


def cmd_autolabel(args: argparse.Namespace) -> int:
    from .asks import asks_for, label_config_labels, parse_labels
    from .run import RunOptions, autolabel
    from .sources import read_source

    if not args.model:
        raise MiniGPTError("no model given; pass --model FOLDER (or set MINIGPT_MODEL)")
    if args.batch_images < 1:
        raise MiniGPTError(f"--batch-images must be at least 1, got {args.batch_images}")
    if args.actors is not None and args.actors < 1:
        raise MiniGPTError(f"--actors must be at least 1, got {args.actors}")
    if args.engine != "ray" and (args.actors is not None or args.ray_address is not None):
        raise MiniGPTError("--actors and --ray-address are for the Ray engine; add --engine ray")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    labels = names = config_text = None
    if args.labels is not None:
        labels = parse_labels(args.labels)
    elif args.label_config is not None:
        labels, names = label_config_labels(args.label_config)
        config_text = args.label_config.read_text(encoding="utf-8")
    root = args.root.expanduser().resolve() if args.root is not None else None
    image_key = args.image_key or (names.image_key if names is not None else None)
    source = read_source(args.source, root=root, image_key=image_key)
    asks = asks_for(source, task=args.task, labels=labels, names=names)
    options = RunOptions(
        model=str(args.model),
        out=args.out.expanduser(),
        model_version=args.model_version,
        device=args.device,
        dtype=args.dtype,
        batch_images=args.batch_images,
        quiet=args.quiet,
        label_config=config_text,
        root=root,
        engine=args.engine,
        actors=args.actors,
        ray_address=args.ray_address,
    )
    summary = autolabel(source, asks, options)
    print(json.dumps(summary, indent=2))
    return 0
