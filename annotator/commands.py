"""`minigpt-annotate gui`: the desktop annotator's subcommand, registered by the composition root
(`minigpt_annotate.cli`).

Qt is imported only when the command runs, so the command line's help works without the [gui] extra.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from model.commands import missing_extra
from model.errors import MiniGPTError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gui",
        help="the desktop annotator: open a folder, ask the model, correct boxes, export COCO (needs the [gui] extra)",
        description="Opens FOLDER (its project store, FOLDER.minigpt.sqlite, sits next to it) and returns to where "
        "you left off. The model is a local folder (--model, on the GPU when there is one) or a remote "
        "`minigpt-annotate serve` (--server); the last one used is remembered per project and loads when neither is "
        "given.",
    )
    p.add_argument("folder", nargs="?", type=Path, default=None, help="folder of images")
    p.add_argument("--store", type=Path, default=None, help="project store file (default: next to the folder)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", default=None, help="local model folder or hub id, loaded in the background")
    source.add_argument("--server", default=None, help="URL of a `minigpt-annotate serve`, e.g. http://gpu-box:9090")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda … (with --model)")
    p.set_defaults(run=cmd_gui)


def cmd_gui(args: argparse.Namespace) -> int:
    from .core.sources import ModelSource

    try:
        from .gui.app import run
    except ImportError as err:
        raise missing_extra("the desktop annotator", "gui", err) from err
    if args.folder is not None and not args.folder.is_dir():
        raise MiniGPTError(f"folder {args.folder} not found; pass a folder of images")
    if args.folder is None and args.store is not None and not args.store.is_file():
        raise MiniGPTError(f"project store {args.store} not found; pass the folder of images to start a project")
    source = None
    if args.model:
        source = ModelSource("local", str(args.model), device=args.device)
    elif args.server:
        source = ModelSource("server", args.server)
    return run(args.folder, store=args.store, source=source)
