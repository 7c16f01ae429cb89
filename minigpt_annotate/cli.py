"""`minigpt-annotate`: one entry point with subcommands, each registered by the package that owns it.

Failures exit non-zero with a one-line cause on stderr and no traceback (set MINIGPT_DEBUG=1 to see it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import annotator.commands
import autolabel.commands
import ml_backend.commands
import model.commands
from model.errors import MiniGPTError

DESCRIPTION = "MiniGPT-v2 box proposals for labelling: ask about images, correct, export COCO, fine-tune."
# Order of the help listing: the core's commands, then the surfaces built on them.
REGISTRARS = (
    model.commands.register,
    ml_backend.commands.register,
    annotator.commands.register,
    autolabel.commands.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = model.commands.OneLineErrorParser(prog="minigpt-annotate", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in REGISTRARS:
        register(sub)
    return parser


def _quiet_libraries() -> None:
    # stdout is for results (often JSON). Library warnings are noise for a user; transformers' loading progress
    # bars stay, on stderr, because loading a 7B model takes a while.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _quiet_libraries()
        return int(args.run(args))
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
