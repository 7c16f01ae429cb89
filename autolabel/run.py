"""One autolabel run: check everything, then answer what the journal does not hold yet, then write the files.

Nothing is written before the source, the asks, the model folder and an existing journal's identity are checked,
so bad input leaves the output folder as it was.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model.errors import MiniGPTError

from .asks import Asks
from .journal import JOURNAL_NAME, Journal, JournalError, identity_changes, refusal
from .outputs import write_outputs
from .sources import Source

if TYPE_CHECKING:
    from .engine import Engine
    from .project import ProjectLink

__all__ = ["RunOptions", "autolabel", "model_fingerprint", "model_version"]

logger = logging.getLogger("autolabel")

KILL_AFTER_ENV = "MINIGPT_AUTOLABEL_KILL_AFTER"  # tests: SIGKILL this process once the journal holds N images


@dataclass(frozen=True)
class RunOptions:
    model: str
    out: Path
    model_version: str | None = None
    device: str | None = "auto"
    dtype: str | None = "auto"
    batch_images: int = 4
    quiet: bool = False
    label_config: str | None = None  # its text, when given
    root: Path | None = None
    engine: str = "local"  # or "ray" (autolabel.ray_engine)
    actors: int | None = None  # ray: model actors (default: one per GPU of the cluster, else 1)
    ray_address: str | None = None  # ray: join this cluster instead of starting a local one
    project: ProjectLink | None = None  # a live Label Studio project: images read from it, predictions pushed to it
    retry_failed: bool = False  # ask again the images earlier runs failed on


def model_fingerprint(model: str) -> str:
    """A local model folder's config.json (its sha256), or the hub id: what the journal records of the model."""
    folder = Path(model)
    config = folder / "config.json"
    if config.is_file():
        return "sha256:" + hashlib.sha256(config.read_bytes()).hexdigest()[:16]
    return f"hub:{model}"


def autolabel(source: Source, asks: Asks, options: RunOptions) -> dict[str, Any]:
    """Label every item of ``source``, resuming from ``options.out``'s journal; returns the summary."""
    from model.proposer import check_model_source

    check_model_source(options.model)
    version = model_version(options.model, options.model_version)
    identity = {
        "model_version": version,
        "model": model_fingerprint(options.model),
        "source": source.fingerprint,
        **asks.identity(),
    }
    out = options.out
    if out.exists() and not out.is_dir():
        raise MiniGPTError(f"--out {out} is a file; pass a folder")
    stored = Journal.stored(out, failed=not options.retry_failed) if out.is_dir() else None
    if stored is not None and identity_changes(stored[0], identity):
        raise JournalError(refusal(out / JOURNAL_NAME, identity_changes(stored[0], identity)))
    # The model is loaded before DIR is touched (a model that fails to load leaves nothing behind), and not at all
    # when the journal already holds every image (then only the files are rewritten).
    done_before = (stored[1] if stored is not None else set()) | source.skip
    engine = _engine(options, version) if any(i.key not in done_before for i in source.items) else None
    try:
        out.mkdir(parents=True, exist_ok=True)
        journal = Journal.open(out, identity)
        if options.retry_failed and (forgotten := journal.forget_failures()):
            logger.info("asking again %d image(s) that failed before (--retry-failed)", forgotten)
    except BaseException:
        if engine is not None:  # a Ray runtime the engine started stops with the command, however it ends
            engine.close()
        raise
    try:
        started = time.perf_counter()
        done = journal.done()
        todo = [item for item in source.items if item.key not in done and item.key not in source.skip]
        if todo and engine is None:  # the journal went away since the look above: answer what is missing
            engine = _engine(options, version)
        results = engine.run(todo, asks) if engine is not None and todo else iter(())
        total = len(source.items) - len(source.skip)
        answered = _drive(results, journal, total, len(source.items) - len(todo) - len(source.skip), options.quiet)
        wall = time.perf_counter() - started
        stats: dict[str, Any] = {
            "this_run": {"images": answered, "wall_s": round(wall, 3), "images_per_s": _rate(answered, wall)}
        }
        pushing: MiniGPTError | None = None
        if options.project is not None:
            try:
                options.project.push(source, asks, journal.results(), version)
            except MiniGPTError as err:  # the files are still written; the rerun pushes the rest
                pushing = err
            stats["label_studio"] = options.project.stats(source)
        summary = write_outputs(
            out,
            source,
            asks,
            journal.results(),
            model_version=version,
            label_config=options.label_config,
            root=options.root,
            run_stats=stats,
        )
        if pushing is not None:
            pushed = options.project.pushed if options.project is not None else 0
            raise MiniGPTError(f"{pushing} ({pushed} predictions pushed before it; run the same command again)")
        return summary
    finally:
        journal.close()
        if engine is not None:
            engine.close()


def model_version(model: str, given: str | None) -> str:
    """The version recorded with every box: ``--model-version``, else the Proposer's default for the model."""
    from model.proposer import model_version_for

    return model_version_for(model, given)


def _engine(options: RunOptions, version: str) -> Engine:
    if options.engine == "ray":
        from .ray_engine import RayEngine

        return RayEngine(
            options.model,
            model_version=version,
            device=options.device,
            dtype=options.dtype,
            batch_images=options.batch_images,
            actors=options.actors,
            address=options.ray_address,
            media=options.project.media if options.project is not None else None,
        )
    from model.proposer import Proposer

    from .engine import LocalEngine

    # Each image is seen once, in one call with all its labels: the prefix is shared within the call, and a cache
    # across calls would only churn (up to 1 GiB of KV at full size).
    proposer = Proposer.from_pretrained(
        options.model, device=options.device, dtype=options.dtype, model_version=version, prefix_cache_bytes=0
    )
    media = options.project.media if options.project is not None else None
    return LocalEngine(proposer, batch_images=options.batch_images, media=media)


def _drive(results: Any, journal: Journal, total: int, already: int, quiet: bool) -> int:
    """Journal each result as it arrives, with progress; returns how many images this invocation answered."""
    from tqdm import tqdm

    kill_after = os.environ.get(KILL_AFTER_ENV)
    bar = tqdm(total=total, initial=already, unit="img", disable=quiet, file=sys.stderr, dynamic_ncols=True)
    count = failed = 0
    last_log = time.monotonic()
    with bar:
        for result in results:
            journal.commit(result)  # only now does it count as done
            count += 1
            failed += result.error is not None
            if result.error is not None:  # over the bar, or as a log line
                (logger.warning if quiet else bar.write)(f"failed: {result.image}: {result.error}")
            bar.update(1)
            bar.set_postfix(failed=failed, refresh=False)
            if quiet and time.monotonic() - last_log >= 10:
                last_log = time.monotonic()
                logger.info("%d of %d images done, %d failed", already + count, total, failed)
            if kill_after is not None and already + count >= int(kill_after):
                os.kill(os.getpid(), signal.SIGKILL)
    if quiet:
        logger.info("%d of %d images done, %d failed", already + count, total, failed)
    return count


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 3) if seconds > 0 else 0.0
