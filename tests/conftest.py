"""Shared fixtures. Tests never touch a model hub: every model is generated here, at tiny sizes."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # Qt tests run without a display, in CI too
# The desktop's settings (recent folders, layout, last server) go to a throwaway folder, never the user's config.
os.environ["MINIGPT_ANNOTATE_CONFIG"] = tempfile.mkdtemp(prefix="minigpt-annotate-config-")

from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings
from official_layout import IMAGE_SIZE, OfficialFiles, write_official_layout
from transformers.utils import logging as hf_logging

hf_logging.disable_progress_bar()
torch.set_num_threads(min(4, torch.get_num_threads()))

# Hypothesis times every example (a 200 ms deadline) and its data generation (the too_slow health check): wall-clock
# checks that a busy machine fails while the code is right. Tests check behaviour; speed is measured in bench/.
settings.register_profile("no-wall-clock", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("no-wall-clock")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `make-tiny` folder: random weights, real classes, real tokenizer files."""
    from model.synthetic.tiny import make_tiny

    out = tmp_path_factory.mktemp("tiny-model")
    make_tiny(out, seed=0)
    return out


@pytest.fixture(scope="session")
def official_files(tmp_path_factory: pytest.TempPathFactory) -> OfficialFiles:
    """Tiny checkpoints in the official three-file layout, peft-0.2 LoRA names."""
    return write_official_layout(tmp_path_factory.mktemp("official"), seed=1)


@pytest.fixture(scope="session")
def official_model(official_files: OfficialFiles):
    """(model, processor) loaded directly from the official-layout files, fp32."""
    from model.weights.official import load_official

    return load_official(official_files.eva, official_files.llama_dir, official_files.minigptv2, image_size=IMAGE_SIZE)


@pytest.fixture(scope="session")
def box_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained to answer `[refer]`/`[detection]` with fixed boxes (see box_model.py), saved."""
    from box_model import train_box_model

    model, processor = train_box_model()
    out = tmp_path_factory.mktemp("box-model")
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def box_proposer(box_model_dir: Path):
    from model.proposer import Proposer

    return Proposer.from_pretrained(box_model_dir, device="cpu", dtype="float32")
