"""`minigpt-annotate serve` and `evaluate-store`: the backend's subcommands, registered by the composition root
(`minigpt_annotate.cli`).

Only the standard library and `model.commands` are imported here, so the command line's help works without the
[backend] extra; the server itself is imported when the command runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from model.commands import DTYPES, missing_extra


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve the model as a Label Studio ML backend (needs the [backend] extra)",
        description="Label Studio's ML-backend contract (/health, /setup, /predict, /webhook, /metrics) on "
        "waitress, which reads each request whole before a worker thread runs it, so slow clients cannot starve it. "
        "This is also the production command (README, Production). Label Studio access comes from LABEL_STUDIO_URL "
        "and LABEL_STUDIO_API_KEY; request limits from MINIGPT_MAX_* and the server from MINIGPT_THREADS, "
        "MINIGPT_CONNECTION_LIMIT, MINIGPT_IDLE_TIMEOUT; see README.",
    )
    p.add_argument("--model", default=os.environ.get("MINIGPT_MODEL"), help="model folder or hub id")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to accept connections from other machines")
    p.add_argument("--port", type=int, default=9090)
    p.add_argument("--corrections", type=Path, default=None, help="folder where webhooks store corrected boxes (COCO)")
    p.add_argument("--score-threshold", type=float, default=None, help="suggest only boxes scoring at least this")
    p.add_argument("--model-version", default=None, help="the version Label Studio shows (default: folder name)")
    # None: MINIGPT_DEVICE / MINIGPT_DTYPE, else auto (a default here would override the environment)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: MINIGPT_DEVICE, else auto)")
    p.add_argument("--dtype", default=None, choices=DTYPES, help="default: MINIGPT_DTYPE, else auto")
    learning = p.add_argument_group("learning from corrections (README, Learning from corrections)")
    learning.add_argument(
        "--learn",
        action="store_true",
        default=None,
        help="fine-tune on the stored corrections in the background and serve the result when it does not do worse "
        "on held-out tasks (needs --corrections; default: MINIGPT_LEARN, else off)",
    )
    learning.add_argument(
        "--learn-every", type=int, default=None, help="stored corrections that start a run (MINIGPT_LEARN_EVERY, 50)"
    )
    learning.add_argument(
        "--learn-dir", type=Path, default=None, help="learned models and runs (default: <corrections>/models)"
    )
    learning.add_argument(
        "--learn-recipe",
        type=Path,
        default=None,
        help="training recipe of a run (MINIGPT_LEARN_RECIPE; default: the shipped model/recipes/corrections.yaml, "
        "corrections mixed with a replay of the served model's confident answers)",
    )
    learning.add_argument(
        "--rollback",
        action="store_true",
        help="serve the model promoted before the current one (the base after the first promotion), for good",
    )
    p.set_defaults(run=cmd_serve)

    e = sub.add_parser(
        "evaluate-store",
        help="acceptance of each model version's predictions in real labelling, from a corrections store",
        description="For every annotation the backend stored (serve --corrections DIR), the boxes of the prediction "
        "the annotator saw are matched to the submitted boxes as `evaluate` matches proposals (IoU >= 0.5, same "
        "label, one-to-one): kept / predicted is the acceptance rate, per model version. Reads the store only.",
    )
    e.add_argument("corrections", type=Path, metavar="CORRECTIONS_DIR", help="the folder given to serve --corrections")
    e.set_defaults(run=cmd_evaluate_store)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from .serving import serve
    except ImportError as err:
        raise missing_extra("the Label Studio backend", "backend", err) from err
    return serve(
        model=args.model,
        host=args.host,
        port=args.port,
        corrections_dir=args.corrections,
        score_threshold=args.score_threshold,
        model_version=args.model_version,
        device=args.device,
        dtype=args.dtype,
        learn=args.learn,
        learn_every=args.learn_every,
        learn_dir=args.learn_dir,
        learn_recipe=args.learn_recipe,
        rollback=args.rollback,
    )


def cmd_evaluate_store(args: argparse.Namespace) -> int:
    from .corrections import acceptance_by_model

    rows = acceptance_by_model(args.corrections)
    if not rows:
        print(f"{args.corrections}: no annotation with a prediction recorded yet (annotations stored before this "
              "version, or by tasks without predictions, say nothing about acceptance)")  # fmt: skip
        return 0
    print(f"{'model version':<24} {'predicted':>9} {'kept':>6} {'acceptance':>10} {'drawn':>6}")
    for row in rows:
        rate = "-" if row.acceptance_rate is None else f"{row.acceptance_rate:.1%}"
        name = row.model_version if row.model_version is not None else "(unknown)"
        print(f"{name:<24} {row.predicted:>9} {row.kept:>6} {rate:>10} {row.drawn:>6}")
    return 0
