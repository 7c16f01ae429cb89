"""Measure the peak memory an image costs on each path into the model, in a fresh process, and print it as JSON.

Run as ``python tests/memory_probe.py <path> ...`` by tests/test_image_memory.py. Every figure is resident memory
(RSS) in bytes, from Linux's own accounting: ``idle`` once the path is warm (the model loaded, one small image
served), ``peak`` the highest RSS the process ever reached (ru_maxrss), ``after`` once the big requests are done. So
``peak - idle`` is an upper bound of what the big image added at its worst.

Paths:
    load <image> <fit_pixels>           model.images.load_image in this process
    cli <model> <small image> <image>   `minigpt-annotate propose` in a child process; idle = its peak on the small one
    propose <model> <root> <small> <big>           POST /propose to the real Flask app (real model) in this process
    predict <model> <root> <small> <big> [<big>...]  POST /predict with one task per image, Label Studio style
"""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LABEL_CONFIG = """
<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image"><Label value="circle"/><Label value="square"/></RectangleLabels>
</View>
"""


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def probe_load(image: str, fit_pixels: str) -> dict:
    from model.images import load_image

    idle = rss()
    loaded = load_image(image, fit_pixels=int(fit_pixels))
    return {"idle": idle, "peak": peak(), "after": rss(), "size": list(loaded.image.size)}


def probe_cli(model: str, small: str, big: str) -> dict:
    def child_peak(image: str) -> int:
        command = [sys.executable, "-m", "minigpt_annotate", "propose", "--model", model, "--device", "cpu"]
        command += ["--task", "detection", "--query", "circle", "--json", image]
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, not all children's
            process.returncode = os.waitstatus_to_exitcode(status)
            if process.returncode != 0:
                log.seek(0)
                raise RuntimeError(f"propose failed on {image}: {log.read().decode()[-2000:]}")
        return usage.ru_maxrss * 1024

    idle = child_peak(small)
    return {"idle": idle, "peak": child_peak(big), "after": 0}


def _app(model: str, root: str):
    from label_studio_access.media import MediaFetcher, MediaSettings
    from ml_backend.backend import MiniGPTBackend
    from ml_backend.server import create_app
    from ml_backend.settings import load_proposer

    fetcher = MediaFetcher(MediaSettings(label_studio_url=None, api_key=None, local_files_root=Path(root)))
    return create_app(MiniGPTBackend(load_proposer(model, "cpu"), fetcher)).test_client()


def _propose(client, image: Path) -> None:
    body = {"image": base64.b64encode(image.read_bytes()).decode(), "prompts": [{"task": "detection", "query": "x"}]}
    response = client.post("/propose", json=body)
    if response.status_code != 200:
        raise RuntimeError(f"/propose answered {response.status_code}: {response.get_data(as_text=True)[:500]}")


def _predict(client, names: list[str]) -> list[dict]:
    tasks = [{"id": i + 1, "data": {"image": f"/data/local-files/?d={name}"}} for i, name in enumerate(names)]
    response = client.post("/predict", json={"tasks": tasks, "label_config": LABEL_CONFIG})
    if response.status_code != 200:
        raise RuntimeError(f"/predict answered {response.status_code}: {response.get_data(as_text=True)[:500]}")
    return response.get_json()["results"]


def probe_propose(model: str, root: str, small: str, big: str) -> dict:
    client = _app(model, root)
    _propose(client, Path(root, small))
    idle = rss()
    _propose(client, Path(root, big))
    return {"idle": idle, "peak": peak(), "after": rss()}


def probe_predict(model: str, root: str, small: str, *big: str) -> dict:
    client = _app(model, root)
    _predict(client, [small])
    idle = rss()
    results = _predict(client, list(big))
    return {"idle": idle, "peak": peak(), "after": rss(), "answered": len(results)}


def main(argv: list[str]) -> None:
    probes = {"load": probe_load, "cli": probe_cli, "propose": probe_propose, "predict": probe_predict}
    print(json.dumps(probes[argv[0]](*argv[1:])))


if __name__ == "__main__":
    main(sys.argv[1:])
