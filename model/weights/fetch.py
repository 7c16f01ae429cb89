"""Download the three official files (EVA ViT-g from Salesforce's LAVIS bucket, LLaMA-2-7b-chat, the MiniGPT-v2
checkpoint; the sources are listed in the official MiniGPT-4 README). Thin on purpose: everything after the download
is `convert`, which the tests cover on tiny files; nothing here runs in the tests, because no network is reachable
there."""

from __future__ import annotations

import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import MiniGPTError

EVA_URL = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth"
DEFAULT_LLAMA_REPO = "meta-llama/Llama-2-7b-chat-hf"  # gated: accept Meta's licence on the hub and log in first


@dataclass(frozen=True)
class HubFile:
    repo_id: str
    filename: str
    repo_type: str = "model"


# Hub copies of the MiniGPT-v2 checkpoints. The stage-2 file lives only on Google Drive
# (id 1Vi_E7ZtZXRAQcyz4f8E6LtLh2UXABCmu): download it by hand and pass it to `convert --minigptv2`.
MINIGPTV2_CHECKPOINTS = {
    "demo": HubFile("Vision-CAIR/MiniGPT-v2", "minigptv2_checkpoint.pth", repo_type="space"),
    "stage3": HubFile("mm-eval/minigpt4_v2", "checkpoint_stage3.pth"),
}


def download_url(url: str, target: Path) -> Path:
    """Stream `url` to `target` with a progress bar; a partial download never takes the final name."""
    if target.exists():
        return target
    partial = target.with_name(target.name + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise MiniGPTError(f"cannot download {url}: {err}; check the network or download it by hand") from err
    partial.replace(target)
    return target


def download_hub_file(spec: HubFile, folder: Path) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(spec.repo_id, spec.filename, repo_type=spec.repo_type)
    except Exception as err:  # the hub client raises many types; all mean "not downloaded"
        raise MiniGPTError(f"cannot download {spec.filename} from {spec.repo_id}: {err}") from err
    target = folder / spec.filename
    if not target.exists():
        shutil.copyfile(path, target)
    return target


def download_llama(repo_id: str, folder: Path) -> Path:
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(repo_id, local_dir=folder, allow_patterns=["*.json", "*.safetensors", "tokenizer.model"])
    except Exception as err:
        raise MiniGPTError(
            f"cannot download {repo_id}: {err}; it is gated: accept the licence on huggingface.co and run "
            "`hf auth login`, or pass a local folder to `convert --llama`"
        ) from err
    return folder


def fetch_official(out: Path, *, checkpoint: str = "stage3", llama_repo: str = DEFAULT_LLAMA_REPO) -> dict[str, Path]:
    """Download into `out/official/` and return the three paths for `convert`."""
    if checkpoint not in MINIGPTV2_CHECKPOINTS:
        raise MiniGPTError(f"unknown checkpoint {checkpoint!r}; choose one of {', '.join(MINIGPTV2_CHECKPOINTS)}")
    folder = out / "official"
    folder.mkdir(parents=True, exist_ok=True)
    return {
        "eva": download_url(EVA_URL, folder / "eva_vit_g.pth"),
        "llama": download_llama(llama_repo, folder / "llama"),
        "minigptv2": download_hub_file(MINIGPTV2_CHECKPOINTS[checkpoint], folder),
    }
