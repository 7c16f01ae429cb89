"""`bench/engine.py --tiny` keeps the GPU benchmark's code alive in CI: it runs on the CPU and prints its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from patience import HANG_S

BENCH = Path(__file__).resolve().parents[1] / "bench" / "engine.py"


def test_engine_benchmark_runs_tiny_and_reports_every_figure() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--tiny",
            "--images",
            "4",
            "--repeats",
            "1",
            "--new-tokens",
            "8",
            "--label-images",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=HANG_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    print(json.dumps(report))
    assert report["size"] == "tiny" and report["new_tokens"] == 8
    assert report["official_loop"]["latency_s"] > 0
    engine = report["engine"]
    assert engine["cache"] == "dynamic"  # auto on a CPU
    assert engine["latency_s"] > 0 and engine["warmup_s"] > 0
    assert set(engine["one_prompt"]["by_batch_size"]) == {"1", "4"}
    assert engine["five_prompts"]["prompts_per_s"] > 0
    assert engine["five_prompts"]["images_per_s"] == round(engine["five_prompts"]["prompts_per_s"] / 5, 2)
    assert report["ratios"]["latency_speedup_vs_official"] > 0
    many = report["many_labels"]  # issue 18: the shared image prefix, on and off, in the same run
    assert many["batch_size"] == 4 and many["images"] == 2
    for count in (1, 5, 20):
        figures = many[f"{count}_labels"]
        assert figures["prompts_per_s_prefix_on"] > 0 and figures["prompts_per_s_prefix_off"] > 0
        ratio = figures["prompts_per_s_prefix_on"] / figures["prompts_per_s_prefix_off"]
        assert figures["ratio_on_off"] == pytest.approx(ratio, rel=0.05)
    desktop = report["desktop"]
    assert len(desktop["questions"]) == 5
    assert len(desktop["seconds_prefix_cache"]) == len(desktop["seconds_no_prefix"]) == 5
    assert all(s > 0 for s in desktop["seconds_prefix_cache"] + desktop["seconds_no_prefix"])
    assert desktop["ratio_questions_2_to_5"] > 0 and desktop["prefix_mb_per_image"] > 0


def test_engine_benchmark_refuses_full_size_without_a_gpu() -> None:
    import torch

    if torch.cuda.is_available():  # on a GPU machine the full-size run is the real thing, not an error
        return
    done = subprocess.run([sys.executable, str(BENCH)], capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode != 0
    assert "needs a CUDA GPU; use --tiny" in done.stderr
