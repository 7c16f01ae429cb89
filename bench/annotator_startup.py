"""Desktop annotator start-up: time to first window, memory with the tiny model, and memory for a huge image.

Runs the real window offscreen in this process and prints JSON:

* ``time_to_first_window_s``: from interpreter start (Linux: the process start time) to the window shown with a
  folder open, including the imports;
* ``rss_mb``: resident memory after the window, after loading the shipped tiny model, and after one
  ``[detection]`` run; ``peak_rss_mb`` is the high-water mark;
* ``huge_image``: the peak-memory increase for opening a 12000×9000 JPEG in the window, next to what decoding it
  fully would take (12000·9000·3 bytes).

    python bench/annotator_startup.py [--huge]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc), so imports count toward time to first window."""
    ticks = os.sysconf("SC_CLK_TCK")
    start = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / ticks
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - start


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--huge", action="store_true", help="also open a 12000×9000 JPEG and measure the peak")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, huge=args.huge)))
        return

    from PIL import Image

    from model.synthetic.shapes import make_shapes

    work = Path(tempfile.mkdtemp(prefix="annotator-bench-"))
    make_shapes(work, images=20, seed=0)
    if args.huge:
        (work / "huge").mkdir()
        # A real JPEG of the target size, made from a small scene scaled up (cheap to write, costly to decode).
        scene = Image.open(next((work / "images").glob("*.png"))).convert("RGB")
        scene.resize((12000, 9000)).save(work / "huge" / "huge.jpg", quality=85)
    # A fresh interpreter, so the time to first window includes every import, as for a user.
    command = [sys.executable, __file__, "--child", str(work), *(["--huge"] if args.huge else [])]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    print(json.dumps(json.loads(done.stdout.strip().splitlines()[-1]), indent=2))


def measure(work: Path, *, huge: bool) -> dict[str, object]:
    from PySide6.QtWidgets import QApplication

    from annotator.core.sources import ModelSource
    from annotator.gui.main_window import MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    window = MainWindow()
    window.open_folder(work / "images", work / "bench.minigpt.sqlite")
    window.show()
    app.processEvents()
    first_window = process_age_s()
    after_window = rss_mb()

    def wait_idle() -> float:
        started = time.perf_counter()
        assert window.ai is not None
        while window.ai.busy:
            app.processEvents()
            time.sleep(0.005)
        return time.perf_counter() - started

    from model.synthetic.shapes_model import SHIPPED_DIR

    window.load_model(ModelSource("local", str(SHIPPED_DIR), device="cpu"))
    load_s = wait_idle()
    after_model = rss_mb()
    window.ai_panel.set_query("circle, square, triangle")
    window.run_model()
    run_s = wait_idle()
    after_run = rss_mb()
    assert window.ai is not None
    result: dict[str, object] = {
        "time_to_first_window_s": round(first_window, 3),
        "model_load_s": round(load_s, 3),
        "detection_run_s": round(run_s, 3),
        "rss_mb": {"window": round(after_window, 1), "model": round(after_model, 1), "after_run": round(after_run, 1)},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "model": window.ai.engine.description if window.ai.engine else None,
    }
    if huge:
        base, peak_before = rss_mb(), peak_rss_mb()
        window.open_folder(work / "huge", work / "huge.minigpt.sqlite")  # shows the image at once
        app.processEvents()
        result["huge_image"] = {
            "size": [12000, 9000],
            "shown_as": list(window.canvas.image_size),
            "rss_increase_mb": round(rss_mb() - base, 1),
            # ru_maxrss only rises: its growth past the earlier high-water mark bounds the peak from above.
            "peak_increase_mb_at_most": round(max(peak_rss_mb() - base, 0.0), 1),
            "peak_grew": peak_rss_mb() > peak_before,
            "full_decode_mb": round(12000 * 9000 * 3 / 2**20, 1),
        }
    window.close()
    return result


if __name__ == "__main__":
    main()
