"""`serve --learn`: the backend learns from the corrections Label Studio sends (the ML backend's `fit`).

Every annotation a webhook stores counts; after `learn_every` of them a learning run starts in a background thread
(one at a time: corrections arriving during a run count towards the next). A run
1. exports a snapshot of the corrections store, split by task into a training part and a fixed held-out slice
   (:mod:`ml_backend.learned_models`), with hard links to the images, so the live store is only ever read;
2. fine-tunes the base model on the training part in a child process (own process group, so a kill reaches all of
   it and nothing of it shares this process's memory, GIL or model lock): /predict keeps answering throughout;
3. scores the candidate and the serving model on the held-out slice in another child (model.evaluation's
   acceptance rate: the share of proposed boxes a labeller would keep);
4. promotes the candidate if its acceptance rate is not lower: the state file names it, then the backend swaps its
   Proposer between two model calls and answers with the new `model_version`. A rejected candidate stays in its
   folder with its evaluation.

Everything a run writes lives in `.tmp-vN` until the run is complete, and the served model changes only by an atomic
rename of the state file followed by the swap, so killing the training (or the whole server) at any moment leaves
the served model, the state and the corrections store as they were.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from model.errors import MiniGPTError
from model.files import write_text_atomic
from model.proposer import Proposer

from . import learned_models as runs
from .backend import MiniGPTBackend
from .corrections import CorrectionStore
from .learned_models import LearningState, RunEvaluation, ServedModel

log = logging.getLogger(__name__)

SETTLE_S = 2.0  # a burst of webhooks is one run: wait until corrections stop arriving for this long (at most 30 s)
STOP_WAIT_S = 10.0


class Learner:
    """Counts stored corrections and runs learning runs for one backend; `status()` is what /metrics shows."""

    def __init__(
        self,
        backend: MiniGPTBackend,
        store: CorrectionStore,
        learn_dir: Path,
        state: LearningState,
        *,
        every: int,
        holdout_percent: int,
        device: str,
        recipe: Path,
        train_args: str = "",
        load: Callable[[str, str], Proposer],
    ):
        """`load(path, version)` loads a promoted candidate, ready to serve."""
        self.backend = backend
        self.store = store
        self.learn_dir = learn_dir
        self.every = every
        self.holdout_percent = holdout_percent
        self.device = device
        self.recipe = recipe
        self.train_args = shlex.split(train_args)
        self._load = load
        self._state = state
        self._lock = threading.Lock()
        self._pending = 0
        self._last_correction = 0.0
        self._phase = "idle"
        self._thread: threading.Thread | None = None
        self._child: subprocess.Popen | None = None
        self._stopping = False
        self._last_failure: str | None = None
        self._runs_here = 0  # runs started by this process (the state counts all of them)
        runs.discard_interrupted_runs(learn_dir)

    # --- what the backend calls --------------------------------------------------------------------------------
    def correction_stored(self) -> None:
        """One more correction in the store; start a run when enough have arrived and none is running."""
        with self._lock:
            self._pending += 1
            self._last_correction = time.monotonic()
            if self._pending < self.every or self._thread is not None or self._stopping:
                return
            self._thread = threading.Thread(target=self._loop, name="learning", daemon=True)
            self._thread.start()

    def status(self) -> dict:
        with self._lock:
            state = self._state
            promotion = state.last_promotion
            return {
                "state": self._phase,
                "learn_every": self.every,
                "corrections_since_run": self._pending,
                "runs": state.runs,
                "runs_this_process": self._runs_here,
                "training_pid": self._child.pid if self._phase == "training" and self._child is not None else None,
                "served_version": self.backend.model_version,
                "base_version": state.base_version,
                "last_evaluation": state.last_evaluation.model_dump() if state.last_evaluation else None,
                "last_promotion": promotion.model_dump() if promotion else None,
                "last_failure": self._last_failure,
            }

    def stop(self) -> None:
        """Stop a running run: its child's process group is killed and the run kept as `vN.failed` (or, if the
        server exits first, its `.tmp-vN` is deleted at the next start)."""
        with self._lock:
            self._stopping = True
            thread = self._thread
        self._kill_child()
        if thread is not None:
            thread.join(timeout=STOP_WAIT_S)

    # --- the run -----------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            self._settle()
            with self._lock:
                self._pending = 0
                self._state.runs += 1
                run = self._state.runs
                self._runs_here += 1
                runs.save_state(self.learn_dir, self._state)  # run numbers are never reused, even after a crash
            try:
                self._run(run)
                self._last_failure = None
            except Exception as err:  # a failed run must never take the server down
                self._last_failure = f"run {run}: {err}"
                log.error("learning run %d failed: %s; the served model is unchanged", run, err)
            finally:
                self._set_phase("idle")
            with self._lock:
                if self._pending < self.every or self._stopping:
                    self._thread = None
                    return

    def _settle(self) -> None:
        """Wait for a burst of corrections to end (so one burst is one run), at most 15 settle periods."""
        deadline = time.monotonic() + 15 * SETTLE_S
        while not self._stopping and time.monotonic() < deadline:
            with self._lock:
                quiet = time.monotonic() - self._last_correction
            if quiet >= SETTLE_S:
                return
            time.sleep(SETTLE_S - quiet)

    def _run(self, run: int) -> None:
        temp = self.learn_dir / f"{runs.TEMP_PREFIX}{run}"
        final = self.learn_dir / f"v{run}"
        try:
            evaluation = self._train_and_evaluate(run, temp, final)
        except BaseException as err:
            failed = final.with_name(f"v{run}.failed")
            with contextlib.suppress(OSError):
                temp.rename(failed)  # kept for its logs
            if isinstance(err, Exception):
                raise MiniGPTError(f"{err}; its files are in {failed}") from err
            raise
        temp.rename(final)  # complete: from here on the run is `vN`
        with self._lock:
            self._state.last_evaluation = evaluation
            if evaluation.promoted:
                self._state.served.append(
                    ServedModel(version=self._version(run), path=str(final / "model"), run=run, promoted_at=runs.now())
                )
            runs.save_state(self.learn_dir, self._state)
        if evaluation.promoted:
            self._promote(run, final / "model")
        else:
            log.warning(
                "learning run %d: candidate not promoted (%s); kept with its evaluation in %s",
                run,
                evaluation.reason,
                final,
            )

    def _train_and_evaluate(self, run: int, temp: Path, final: Path) -> RunEvaluation:
        self._set_phase("exporting")
        temp.mkdir(parents=True)
        n_train, n_held = runs.export_split(self.store.snapshot(), temp, self.holdout_percent)
        if not n_train or not n_held:
            raise MiniGPTError(
                f"{n_train} training and {n_held} held-out task(s): a run needs both; more corrections are needed"
            )
        serving = self._state.current.path if self._state.current else self._state.base
        serving_version = self.backend.model_version
        self._set_phase("training")
        log.info("learning run %d: fine-tuning on %d task(s), %d held out", run, n_train, n_held)
        self._child_run(
            runs.training_command(temp, self.recipe, self._state.base, temp / "model", self.device, self.train_args),
            temp / "train.log",
            "training",
        )
        self._set_phase("evaluating")
        report = temp / "evaluation.reports.json"
        self._child_run(
            runs.evaluation_command(temp / runs.HELDOUT_COCO, report, self.device, str(temp / "model"), serving),
            temp / "evaluate.log",
            "evaluation",
        )
        reports = json.loads(report.read_text())
        candidate = reports["candidate"]["overall"]["acceptance_rate"]
        current = reports["serving"]["overall"]["acceptance_rate"]
        # No proposals at all is no evidence of quality: counted as 0, so a model that stops answering never wins.
        promoted = (candidate or 0.0) >= (current or 0.0)
        evaluation = RunEvaluation(
            run=run,
            held_out_images=n_held,
            train_images=n_train,
            candidate_acceptance=candidate,
            serving_acceptance=current,
            serving_version=serving_version,
            promoted=promoted,
            reason=(
                f"held-out acceptance {_rate(candidate)} vs {_rate(current)} for {serving_version}"
                + ("" if promoted else ": lower")
            ),
            folder=str(final),
            finished_at=runs.now(),
        )
        write_text_atomic(
            temp / "evaluation.json", json.dumps({**evaluation.model_dump(), "reports": reports}, indent=2)
        )
        log.info("learning run %d: %s", run, evaluation.reason)
        return evaluation

    def _child_run(self, command: list[str], log_path: Path, what: str) -> None:
        """Run one child in its own process group, its output in `log_path`; a failure names the log."""
        with open(log_path, "w") as out:
            with self._lock:
                if self._stopping:
                    raise MiniGPTError("the server is stopping")
                self._child = subprocess.Popen(
                    command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=_child_env()
                )
            code = self._child.wait()
        if code != 0:
            tail = (log_path.read_text(errors="replace").strip().splitlines() or [""])[-1][-300:]
            how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise MiniGPTError(f"the {what} {how} ({f'{tail}; ' if tail else ''}see {log_path.name})")

    def _kill_child(self) -> None:
        child = self._child
        if child is not None and child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)

    def _promote(self, run: int, path: Path) -> None:
        self._set_phase("promoting")
        version = self._version(run)
        proposer = self._load(str(path), version)  # outside the model lock: /predict goes on with the old model
        self.backend.swap_model(proposer, version, model_source=str(path))
        log.info("learning run %d: promoted; now serving %s (from %s)", run, version, path)

    def _version(self, run: int) -> str:
        return f"{self._state.base_version}-learn-{run}"

    def _set_phase(self, phase: str) -> None:
        with self._lock:
            self._phase = phase
            if phase == "idle":
                self._child = None
        log.info("learning: %s", phase)


def _rate(value: float | None) -> str:
    return "none" if value is None else f"{value:.3f}"


def _child_env() -> dict[str, str]:
    # The children need no network: a local base model is an absolute path, a hub model is in the cache already.
    return {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
