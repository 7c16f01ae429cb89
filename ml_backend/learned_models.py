"""What `serve --learn` keeps on disk: the learned models, which one is served, and each run's data and evaluation.

Layout of the learning folder (default `<corrections>/models`):
- `state.json`: the base model, how many runs there were, and the promoted models, oldest first; the last one is
  served (none: the base). Replaced atomically, so a crash leaves the old state or the new one, never half of one.
- `vN/`: run N, complete: `corrections/annotations.json`, the training part laid out as a corrections store so the
  correction recipe reads it as it reads the backend's own, and `heldout.json` (COCO), both over
  `corrections/images/` (hard links to the store's copies, so the run never reads the live store while it trains);
  `model/` (the candidate, from the training command, with the recipe's replay answers and checkpoints under it),
  `evaluation.json` (candidate and serving model on the held-out slice, and the decision), `train.log`.
- `vN.failed/`: a run whose training or evaluation failed or was killed, kept for its log.
- `.tmp-vN/`: a run in progress. It becomes `vN` only when complete; one left by a crash is deleted at the next start.

The held-out slice is chosen by task (a hash of the Label Studio task id): a task is held out or not for good,
whatever else is in the store, so the candidate is never scored on a task it was trained on and successive runs are
scored on a growing but consistent slice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from model.annotations import Dataset
from model.coco import write_coco
from model.errors import MiniGPTError
from model.files import write_text_atomic

log = logging.getLogger(__name__)

STATE_NAME = "state.json"
TEMP_PREFIX = ".tmp-v"
_TASK_IMAGE = re.compile(r"task-(\d+)\.")  # the store names a task's image copy images/task-<id>.<ext>


class ServedModel(BaseModel):
    version: str
    path: str = Field(description="the model folder, given to Proposer.from_pretrained")
    run: int
    promoted_at: str


class RunEvaluation(BaseModel):
    """A run's outcome on the held-out slice, as `evaluation.json` and `/metrics` show it."""

    run: int
    held_out_images: int
    train_images: int
    candidate_acceptance: float | None
    serving_acceptance: float | None
    serving_version: str
    promoted: bool
    reason: str
    folder: str
    finished_at: str


class LearningState(BaseModel):
    base: str = Field(description="the model `serve --model` was given; learned models are adapters on it")
    base_version: str
    runs: int = 0
    served: list[ServedModel] = Field(default_factory=list, description="promoted models, oldest first")
    last_evaluation: RunEvaluation | None = None

    @property
    def current(self) -> ServedModel | None:
        return self.served[-1] if self.served else None

    @property
    def last_promotion(self) -> ServedModel | None:
        return self.current


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def load_state(learn_dir: Path, base: str, base_version: str) -> LearningState:
    """The learning folder's state, or a fresh one for `base`. A state made for another base model is refused: its
    adapters would be applied to the wrong weights."""
    path = learn_dir / STATE_NAME
    if not path.exists():
        return LearningState(base=base, base_version=base_version)
    try:
        state = LearningState.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as err:
        raise MiniGPTError(
            f"the learning state {path} is unreadable ({str(err).splitlines()[0]}); restore it from a backup, or "
            "move the folder aside to start learning afresh"
        ) from None
    if state.base != base:
        raise MiniGPTError(
            f"the learned models in {learn_dir} were trained from {state.base}, not {base}; serve --model "
            f"{state.base}, or give --learn-dir a new folder"
        )
    return state


def save_state(learn_dir: Path, state: LearningState) -> None:
    learn_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(learn_dir / STATE_NAME, state.model_dump_json(indent=2))


def rollback(learn_dir: Path, base: str, base_version: str) -> ServedModel | None:
    """Serve the model promoted before the current one (None: the base). The rolled-back model stays on disk."""
    state = load_state(learn_dir, base, base_version)
    if state.current is None:
        raise MiniGPTError(
            f"nothing to roll back in {learn_dir}: the base model {base} is already served (no promoted model)"
        )
    dropped = state.served.pop()
    save_state(learn_dir, state)
    served = state.current
    log.info(
        "rolled back from %s to %s (%s stays in %s)",
        dropped.version,
        served.version if served else f"the base {base_version}",
        dropped.version,
        dropped.path,
    )
    return served


def discard_interrupted_runs(learn_dir: Path) -> None:
    """Delete runs a crash or kill left half-made; the served model and the store are never in them."""
    if not learn_dir.is_dir():
        return
    for path in learn_dir.glob(f"{TEMP_PREFIX}*"):
        log.warning("deleting %s, a learning run that was interrupted", path)
        shutil.rmtree(path, ignore_errors=True)


# --- the held-out slice ------------------------------------------------------------------------------------------
def task_key(image: Path) -> str:
    """What identifies an image's Label Studio task: its id (from the store's copy name), else the file name."""
    match = _TASK_IMAGE.match(image.name)
    return match.group(1) if match else image.name


def is_held_out(key: str, percent: int) -> bool:
    """Whether a task is in the held-out slice: a stable hash, so a task never changes sides."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100 < percent


TRAIN_COCO = Path("corrections") / "annotations.json"  # under the run folder: a corrections store for the recipe
HELDOUT_COCO = Path("heldout.json")


def export_split(dataset: Dataset, run_dir: Path, percent: int) -> tuple[int, int]:
    """Write TRAIN_COCO and HELDOUT_COCO in `run_dir` from a snapshot of the store, with hard links to the images
    (copies across filesystems); the (train, held-out) image counts. An image deleted from the store since the
    snapshot (its task was deleted) is left out."""
    images_dir = run_dir / TRAIN_COCO.parent / "images"  # inside the training part's folder, as in a store
    images_dir.mkdir(parents=True, exist_ok=True)
    parts: dict[bool, list] = {True: [], False: []}
    for record in dataset.images:
        target = images_dir / record.path.name
        try:
            _link_or_copy(record.path, target)
        except FileNotFoundError:
            log.info("%s was deleted from the corrections store since the snapshot; not used", record.path.name)
            continue
        parts[is_held_out(task_key(record.path), percent)].append(record.model_copy(update={"path": target}))
    for name, held in ((TRAIN_COCO, False), (HELDOUT_COCO, True)):
        part = dataset.model_copy(update={"images": parts[held]})
        write_coco(part, run_dir / name)  # file names relative to the file: the run folder can be renamed
    return len(parts[False]), len(parts[True])


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except FileExistsError:
        pass
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            raise
        shutil.copy2(source, target)


# --- the training and evaluation commands ------------------------------------------------------------------------
# Children run `minigpt-annotate` (and this package) as this process found them: appended to the path, so a source
# checkout works and an installed package shadows nothing. They lower their CPU priority first: on a CPU-only
# machine the served model's requests come before training.
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[1])
_CHILD = "import os, sys; hasattr(os, 'nice') and os.nice(10); sys.path.append(sys.argv[1]); from {} import main; "
_CLI = _CHILD.format("minigpt_annotate.cli") + "sys.exit(main(sys.argv[2:]))"
_EVALUATE = _CHILD.format("ml_backend.learned_models") + "sys.exit(main(sys.argv[2:]))"


def training_command(run_dir: Path, recipe: Path, base: str, out: Path, device: str, extra: Sequence[str]) -> list[str]:
    """The command that trains `base` with `recipe` on the corrections `export_split` wrote in `run_dir`, into `out`
    (adapters that load with --model): `train RECIPE --data-root RUN_DIR`, so the recipe's `corrections` dataset
    (path `corrections`) is this run's training part. `extra` is MINIGPT_LEARN_ARGS (`--set PATH=VALUE` ...),
    appended last so it overrides."""
    return [sys.executable, "-c", _CLI, _PACKAGE_PARENT, "train", str(recipe), "--base", base, "--data-root",
            str(run_dir), "--out", str(out), "--device", device, *extra]  # fmt: skip


def evaluation_command(heldout_coco: Path, report: Path, device: str, candidate: str, serving: str) -> list[str]:
    """The command that scores the candidate and the serving model on the held-out slice, in one child process."""
    return [sys.executable, "-c", _EVALUATE, _PACKAGE_PARENT, str(heldout_coco), str(report), device, candidate,
            serving]  # fmt: skip


def main(argv: list[str]) -> int:
    """The evaluation child: `HELDOUT REPORT DEVICE CANDIDATE SERVING`. Writes REPORT as {"candidate": ...,
    "serving": ...}, each the project's EvaluationReport (`minigpt-annotate evaluate --json`), and the candidate's
    calibration.json (fitted on its held-out answers)."""
    import json

    from model.coco import read_coco
    from model.evaluation.calibrate import calibrate_on_heldout
    from model.evaluation.runner import evaluate_model
    from model.proposer import Proposer

    heldout, report, device, candidate, serving = argv
    dataset = read_coco(heldout)
    # The candidate is scored raw and its calibration fitted on these answers, saved in its folder: a promoted
    # model serves calibrated scores (the order of its scores, and so this evaluation, does not change).
    evaluation, _, _ = calibrate_on_heldout(candidate, dataset, source="held-out corrections", device=device)
    reports = {"candidate": json.loads(evaluation.to_json())}
    proposer = Proposer.from_pretrained(serving, device=device)
    reports["serving"] = json.loads(evaluate_model(proposer, dataset).to_json())
    write_text_atomic(report, json.dumps(reports, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
