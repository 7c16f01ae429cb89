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
from typing import TYPE_CHECKING

from model.commands import DTYPES
from model.errors import MiniGPTError

if TYPE_CHECKING:
    from model.labels import LabelSpec

    from .asks import LabelConfigNames
    from .project import ProjectLink
    from .sources import Source

ENGINES = ("local", "ray")  # ray: autolabel.ray_engine, on Ray Data (the "scale" extra)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "autolabel",
        help="propose boxes for a whole dataset, headless and resumable",
        description="Asks the model about every image of SOURCE (a folder, a COCO file, a Label Studio JSON export, "
        'or a JSONL manifest of {"image": ..., "labels"|"phrases": [...]} lines) and writes, in DIR, '
        "proposals.coco.json, label-studio-tasks.json (with predictions), label-config.xml, failures.jsonl and "
        "summary.json. With --label-studio URL --project ID it labels a live project's tasks instead and pushes the "
        "predictions into it (tasks holding this model version's prediction are skipped). Every finished image "
        "is committed to DIR/journal.sqlite first: after a crash, the same command resumes where it stopped. "
        "The summary JSON is printed on stdout.",
    )
    p.add_argument(
        "source",
        type=Path,
        nargs="?",
        help="folder, COCO .json, Label Studio export .json, or manifest .jsonl (or --label-studio and --project)",
    )
    p.add_argument(
        "--label-studio",
        default=None,
        metavar="URL",
        help="a live Label Studio (token in LABEL_STUDIO_API_KEY): label --project's tasks and push the predictions",
    )
    p.add_argument("--project", type=int, default=None, metavar="ID", help="--label-studio: the project's id")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="--label-studio: also answer tasks that hold this model version's prediction, and replace it",
    )
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
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="ask again the images earlier runs into DIR failed on (a file fixed since, a server that was down)",
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
    _check_source_arguments(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    labels = names = config_text = None
    if args.labels is not None:
        labels = parse_labels(args.labels)
    elif args.label_config is not None:
        labels, names = label_config_labels(args.label_config)
        config_text = args.label_config.read_text(encoding="utf-8")
    root = args.root.expanduser().resolve() if args.root is not None else None
    link = None
    if args.label_studio is not None:
        source, link, names, labels, config_text = _project(args, root, labels)
    else:
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
        project=link,
        retry_failed=args.retry_failed,
    )
    summary = autolabel(source, asks, options)
    print(json.dumps(summary, indent=2))
    return 0


def _check_source_arguments(args: argparse.Namespace) -> None:
    if args.label_studio is None:
        if args.source is None:
            raise MiniGPTError("no source given; pass a folder, a COCO, Label Studio or JSONL file, or --label-studio")
        if args.project is not None or args.overwrite:
            raise MiniGPTError("--project and --overwrite are for a live project; add --label-studio URL")
        return
    if args.source is not None:
        raise MiniGPTError(f"pass either a source ({args.source}) or --label-studio, not both; drop one of them")
    if args.project is None:
        raise MiniGPTError("--label-studio needs the project; add --project ID (the number in /projects/ID/)")
    if args.task != "detection":
        raise MiniGPTError("a live project is asked [detection] for its labels; drop --task refer")
    if args.label_config is not None:
        raise MiniGPTError("a live project's own labeling config gives the labels; drop --label-config")


def _project(
    args: argparse.Namespace, root: Path | None, labels: tuple[LabelSpec, ...] | None
) -> tuple[Source, ProjectLink, LabelConfigNames, tuple[LabelSpec, ...], str]:
    """The live project (checked: reachable, token, project), its source, and its labels unless given."""
    from label_studio_access.projects import LabelStudioProject

    from .asks import config_labels
    from .project import ProjectLink, project_source
    from .run import model_version

    env = dict(os.environ)
    if root is not None:  # the folder Label Studio serves /data/local-files/ from, as the backend's setting
        env["LOCAL_FILES_DOCUMENT_ROOT"] = str(root)
    project, media = LabelStudioProject.from_env(args.label_studio, args.project, env)
    # the project's config names the controls its predictions must use, and its labels unless --labels picks some
    own, names = config_labels(project.label_config, where=f"project {args.project}'s labeling config")
    config_text = project.label_config
    if labels is None:
        labels = own
    elif unknown := [spec.value for spec in labels if spec.value not in {o.value for o in own}]:
        raise MiniGPTError(
            f"--labels {', '.join(unknown)}: not a label of project {args.project}; pick from "
            f"{', '.join(o.value for o in own)}, or leave --labels out for all of them"
        )
    else:
        labels = tuple(o for o in own if o.value in {spec.value for spec in labels})  # with their prompts
    image_key = args.image_key or names.image_key
    version = model_version(str(args.model), args.model_version)
    source, earlier = project_source(project, image_key=image_key, model_version=version, overwrite=args.overwrite)
    link = ProjectLink(project, media, overwrite=args.overwrite, earlier=earlier)
    return source, link, names, labels, config_text
