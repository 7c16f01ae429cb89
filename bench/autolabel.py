"""`autolabel` throughput: `--engine local` against `--engine ray` (1 and 2 actors) on the same images, printed as JSON.

Each run is a fresh `minigpt-annotate autolabel` process on the shipped tiny shapes model (CPU) over the same
shapes images, into an empty output folder. Two figures per run:

* ``images_per_s``: the run's own figure from summary.json (``this_run``): from the journal's opening to the last
  image journaled, so it includes Ray Data starting its pipeline and every actor loading the model, but not the
  process start nor ``ray.init`` (Ray starts before the journal is opened, so a bad address fails before DIR exists);
* ``process_s``: the whole command, Python start, model load and a local Ray's start and stop included.

``ray_over_local_at_1_actor`` is ray's images/s over local's (below 1: Ray costs more than it gives). Every run gets
one torch thread per model (OMP_NUM_THREADS=1, which is also what a CPU actor gets on a 2-core machine: one CPU is
kept for decoding): the tiny model is so small that thread contention, not compute, decides its speed (measured on a
shared 2-core machine: the local engine at 1 thread 29.6 images/s, at 2 threads 5.9), so unequal threads would
measure the threads, not the engines. The local engine decodes and runs the model in turn; Ray decodes in tasks while
the actors run the model. On a machine shared with other work the figures are noisy: the load average is printed.

    python bench/autolabel.py              # 300 images (about 2 minutes on 2 cores)
    python bench/autolabel.py --images 48  # a quick look: mostly Ray's start-up
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from model.synthetic.shapes import make_shapes  # noqa: E402
from model.synthetic.shapes_model import SHIPPED_DIR  # noqa: E402

LABELS = "square,circle,triangle"


def run(images: Path, out: Path, *extra: str) -> dict[str, float]:
    command = [sys.executable, "-m", "minigpt_annotate", "autolabel", str(images), "--model", str(SHIPPED_DIR)]
    command += ["--out", str(out), "--device", "cpu", "--labels", LABELS, "--quiet", *extra]
    started = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    process_s = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"bench/autolabel.py: {' '.join(command)} failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    return {
        "images": summary["this_run"]["images"],
        "images_per_s": summary["this_run"]["images_per_s"],
        "run_wall_s": summary["this_run"]["wall_s"],
        "process_s": round(process_s, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        make_shapes(root / "shapes", images=args.images, seed=5, max_shapes=2)
        images = root / "shapes" / "images"
        runs = {
            "local": run(images, root / "local"),
            "ray_1_actor": run(images, root / "ray1", "--engine", "ray", "--actors", "1"),
            "ray_2_actors": run(images, root / "ray2", "--engine", "ray", "--actors", "2"),
        }
    local, ray1 = runs["local"]["images_per_s"], runs["ray_1_actor"]["images_per_s"]
    load = os.getloadavg()
    print(
        json.dumps(
            {
                "model": "tiny-shapes (shipped), CPU",
                "images": args.images,
                "cpus": os.cpu_count(),
                "torch_threads_per_model": 1,
                "load_average_1_5_15_after": [round(x, 2) for x in load],
                "runs": runs,
                "ray_over_local_at_1_actor": round(ray1 / local, 3) if local else None,
                "note": "no GPU figures: bench/autolabel.py runs the tiny model on the CPU only",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
