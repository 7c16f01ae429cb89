"""`bench/engine.py --tiny` keeps the GPU benchmark's code alive in CI: it runs on the CPU and prints its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from patience import HANG_S

BENCH = Path(__file__).resolve().parents[1] / "bench" / "engine.py"


def test_engine_benchmark_runs_tiny_and_reports_every_figure() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--tiny", "--images", "4", "--repeats", "1", "--new-tokens", "8"],
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


def test_engine_benchmark_refuses_full_size_without_a_gpu() -> None:
    import torch

    if torch.cuda.is_available():  # on a GPU machine the full-size run is the real thing, not an error
        return
    done = subprocess.run([sys.executable, str(BENCH)], capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode != 0
    assert "needs a CUDA GPU; use --tiny" in done.stderr
