"""`autolabel --engine ray`: on a local Ray started by the test (3 logical CPUs: 2 model actors and the decode
tasks), with the shipped tiny shapes model, the same files as `--engine local` (same boxes, scores within
tests/same_answers.py's tolerance, the same failures.jsonl), a run SIGKILLed half way (a child process joining the
test's cluster through --ray-address) that the Ray engine resumes to the same files, a command that starts (and
stops) a Ray of its own, a --ray-address with no cluster behind it that fails in bounded time, and the one-line
refusals without the scale extra, without --engine ray, and of a bad MINIGPT_RAY_CONNECT_TIMEOUT_S.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from autolabel_fixtures import IMAGES, LABELS, ROOT, _args, _journal_keys, _same_files, clean_run, shapes
from patience import HANG_S

from autolabel.ray_engine import CONNECT_TIMEOUT_ENV
from minigpt_annotate.cli import main

__all__ = ["clean_run", "shapes"]  # fixtures of tests/autolabel_fixtures.py: the images, and --engine local's files


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray for this module's tests, stopped by them: its address, for a child process to join."""
    ray.init(num_cpus=3, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def test_ray_engine_with_two_actors_writes_the_local_engines_files(
    shapes: Path, clean_run: Path, ray_address: str, tmp_path: Path
):
    out = tmp_path / "out"
    args = _args(shapes / "images", out, "--labels", LABELS, "--engine", "ray", "--actors", "2", "--quiet")
    assert main(args) == 0
    keys = _journal_keys(out)
    assert len(keys) == len(set(keys)) == IMAGES + 1  # every image, the broken one too, each exactly once
    _same_files(out, clean_run)  # boxes equal, scores within tolerance, failures.jsonl equal
    summary, local = (json.loads((d / "summary.json").read_text()) for d in (out, clean_run))
    assert (summary["answered"], summary["failed"], summary["boxes"]) == (
        local["answered"],
        local["failed"],
        local["boxes"],
    )
    assert ray.is_initialized()  # the engine used the test's Ray and left it running for its owner


def test_a_ray_run_killed_half_way_resumes_to_the_same_files(
    shapes: Path, clean_run: Path, ray_address: str, tmp_path: Path
):
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "minigpt_annotate",
        *_args(shapes / "images", out, "--labels", LABELS, "--quiet"),
        *("--engine", "ray", "--actors", "1", "--ray-address", ray_address),
    ]
    child = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "MINIGPT_AUTOLABEL_KILL_AFTER": "3"},
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr[-3000:]
    assert 3 <= len(_journal_keys(out)) < IMAGES + 1
    assert not (out / "proposals.coco.json").exists()

    assert main(_args(shapes / "images", out, "--labels", LABELS, "--engine", "ray", "--actors", "2", "--quiet")) == 0
    keys = _journal_keys(out)
    assert len(keys) == len(set(keys)) == IMAGES + 1
    _same_files(out, clean_run)


def test_without_ray_installed_the_ray_engine_is_one_line_and_writes_nothing(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as without the scale extra
    out = tmp_path / "out"
    assert main(_args(shapes / "images", out, "--labels", LABELS, "--engine", "ray")) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "pip install 'minigpt-annotate[scale]'" in error
    assert not out.exists()


def test_ray_options_without_the_ray_engine_are_refused(shapes: Path, tmp_path: Path, capsys):
    assert main(_args(shapes / "images", tmp_path / "out", "--labels", LABELS, "--actors", "2")) == 1
    assert "add --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_without_an_address_the_command_starts_a_local_ray(shapes: Path, clean_run: Path, tmp_path: Path):
    """A child process (no Ray of its own yet) starts a local Ray on loopback, with at least a CPU per actor and one
    for decoding (2 cores here), answers every image as the local engine does, stops it and exits with 0."""
    out = tmp_path / "out"
    command = [sys.executable, "-m", "minigpt_annotate", *_args(shapes / "images", out, "--labels", LABELS)]
    done = subprocess.run(
        [*command, "--quiet", "--engine", "ray"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["this_run"]["images"] == IMAGES + 1
    _same_files(out, clean_run)


def _closed_port() -> int:
    """A loopback port nothing listens on: bound for a moment to pick it, and closed again."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_address_with_no_cluster_behind_it_fails_in_one_line_and_writes_nothing(
    shapes: Path, tmp_path: Path, scheme: str
):
    """A child process (no Ray of its own) pointed at a closed port: Ray tries the cluster once, waiting 3 s for its GCS
    (Ray's default is 20 tries of ~40 s, a command that looks hung for ~14 min and outlives HANG_S); a ray:// address
    fails the way Ray Client does (at once without `ray[client]`, after its own 3 tries with it). Either way: exit 1,
    one error line naming the address and the fix, and no --out folder."""
    address = f"{scheme}127.0.0.1:{_closed_port()}"
    out = tmp_path / "out"
    command = [sys.executable, "-m", "minigpt_annotate", *_args(shapes / "images", out, "--labels", LABELS)]
    done = subprocess.run(
        [*command, "--engine", "ray", "--ray-address", address],
        cwd=ROOT,
        env={**os.environ, CONNECT_TIMEOUT_ENV: "3"},
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("minigpt-annotate: error:")]
    assert len(errors) == 1, done.stderr[-3000:]  # Ray's own warning lines about the attempt may come before it
    assert f"cannot join the Ray cluster at {address}: " in errors[0]
    assert "leave --ray-address out to run on this machine" in errors[0]
    if not scheme:
        assert f"(Ray waits up to 3 s: {CONNECT_TIMEOUT_ENV})" in errors[0]
    assert not out.exists()


def test_a_bad_connect_timeout_is_one_line_and_writes_nothing(
    shapes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    out = tmp_path / "out"
    for bad in ("soon", "0", "-5", "2.5"):
        monkeypatch.setenv(CONNECT_TIMEOUT_ENV, bad)
        args = _args(shapes / "images", out, "--labels", LABELS, "--engine", "ray", "--ray-address", "127.0.0.1:1")
        assert main(args) == 1
        error = capsys.readouterr().err.strip()
        assert "\n" not in error and f"{CONNECT_TIMEOUT_ENV}={bad!r} is not a positive whole number of seconds" in error
        assert not out.exists()
