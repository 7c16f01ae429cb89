"""Memory of decoding: a small file must not make any path into the model allocate gigabytes (issue 13, item 1).

The attack: a 466 KB PNG of 15000 x 16000 16-bit grey pixels (240 MP, under the 250 MP pixel limit) took one
/propose from 2.3 to 5.5 GB, a 4-image /predict to 11.4 GB, the CLI to 5.6 GB. The documented bound
(README, docs/security.md) is 1.5 GB above idle for any single request, measured here on each path in a fresh process
(tests/memory_probe.py) with Linux's own peak-RSS accounting, so nothing else in the test run can blur it.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from bomb_images import write_flat_png
from hypothesis import given, settings
from hypothesis import strategies as st
from patience import HANG_S
from PIL import Image

from annotator.core.display import DISPLAY_MAX_PIXELS
from ml_backend.backend import _ImageCache
from model import pixel_modes
from model.decode_memory import DecodeMemory, _capacity_from_env
from model.errors import ImageLoadError, MiniGPTError
from model.images import MODEL_FIT_PIXELS, LoadedImage, load_image
from model.synthetic.shapes_model import SHIPPED_DIR

PEAK_ABOVE_IDLE = 1_500_000_000  # the documented bound for one request
KEPT_AFTER = 300_000_000  # what a served request may leave behind (the cache holds models' squares only)
PROBE = Path(__file__).with_name("memory_probe.py")


@pytest.fixture(scope="module")
def bomb_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bombs")
    bomb = write_flat_png(root / "grey16.png", 15000, 16000, bit_depth=16)
    assert bomb.stat().st_size < 500_000  # the attack: under half a megabyte
    Image.new("RGB", (640, 480), (200, 40, 40)).save(root / "small.png")
    return root


def _probe(*args: object) -> dict:
    done = subprocess.run([sys.executable, str(PROBE), *map(str, args)], capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("fit_pixels", [MODEL_FIT_PIXELS, DISPLAY_MAX_PIXELS], ids=["model", "display"])
def test_a_16_bit_png_bomb_decodes_within_the_memory_bound(bomb_root: Path, fit_pixels: int) -> None:
    measured = _probe("load", bomb_root / "grey16.png", fit_pixels)
    width, height = measured["size"]
    assert width * height <= fit_pixels and width / height == pytest.approx(15000 / 16000, rel=1e-3)
    assert measured["peak"] - measured["idle"] < PEAK_ABOVE_IDLE, measured


def test_the_cli_stays_within_the_memory_bound_on_a_16_bit_png_bomb(bomb_root: Path) -> None:
    measured = _probe("cli", SHIPPED_DIR, bomb_root / "small.png", bomb_root / "grey16.png")
    assert measured["peak"] - measured["idle"] < PEAK_ABOVE_IDLE, measured


def test_propose_stays_within_the_memory_bound_on_a_16_bit_png_bomb(bomb_root: Path) -> None:
    measured = _probe("propose", SHIPPED_DIR, bomb_root, "small.png", "grey16.png")
    assert measured["peak"] - measured["idle"] < PEAK_ABOVE_IDLE, measured


def test_a_predict_with_four_png_bombs_stays_within_the_bound_and_gives_the_memory_back(bomb_root: Path) -> None:
    measured = _probe("predict", SHIPPED_DIR, bomb_root, "small.png", *["grey16.png"] * 4)
    assert measured["answered"] == 4
    assert measured["peak"] - measured["idle"] < PEAK_ABOVE_IDLE, measured
    assert measured["after"] - measured["idle"] < KEPT_AFTER, measured


# --------------------------------------------------------------------------------------------------------
# Converting a band at a time gives the pixels of converting the whole image


def _image_of(mode: str, width: int, height: int, seed: int) -> Image.Image:
    """A photo-like image: smooth random shading plus a little noise (white noise would test Pillow's rounding)."""
    rng = np.random.default_rng(seed)
    channels = {"LA": 2, "RGB": 3, "RGBA": 4}.get(mode, 1)
    ys, xs = np.mgrid[0:height, 0:width]
    field = np.stack(
        [
            0.5 + 0.4 * np.sin(xs / (3 + 5 * rng.random()) + ys / (4 + 6 * rng.random()) + 6 * rng.random())
            for _ in range(channels)
        ],
        axis=-1,
    )
    field = np.clip(field + rng.normal(0, 0.02, field.shape), 0, 1)
    if mode == "I;16":
        return Image.fromarray((field[..., 0] * 65535).astype(np.uint16))
    if mode == "I":
        return Image.fromarray((field[..., 0] * 70000).astype(np.int32))
    if mode == "F":
        return Image.fromarray(field[..., 0].astype(np.float32))
    data = (field * 255).astype(np.uint8)
    return Image.fromarray(data[..., 0] if channels == 1 else data, mode)


@settings(max_examples=60, derandomize=True)
@given(
    mode=st.sampled_from(["L", "LA", "RGB", "RGBA", "I;16", "I", "F"]),
    width=st.integers(1, 40),
    height=st.integers(1, 90),
    shrink=st.floats(0.1, 1.0),
    seed=st.integers(0, 2**16),
)
def test_band_by_band_conversion_and_downscaling_leave_no_seams(
    mode: str, width: int, height: int, shrink: float, seed: int
) -> None:
    image = _image_of(mode, width, height, seed)
    size = (max(1, math.floor(width * shrink)), max(1, math.floor(height * shrink)))
    whole = pixel_modes.converted_to_rgb(image)  # one band: the image is far below BAND_PIXELS
    old_band = pixel_modes.BAND_PIXELS
    pixel_modes.BAND_PIXELS = 3 * width  # bands of about 3 rows
    try:
        converted = pixel_modes.converted_to_rgb(image)
        resized = pixel_modes.converted_to_rgb(image, size=size)
    finally:
        pixel_modes.BAND_PIXELS = old_band
    assert converted.tobytes() == whole.tobytes()
    expected = np.asarray(whole.resize(size, Image.Resampling.LANCZOS), dtype=np.int16)
    difference = np.abs(np.asarray(resized, dtype=np.int16) - expected)
    # Pillow's fixed-point filter may round a box's rows differently by 1; a seam (a band missing rows its filter
    # reads) would be off by far more.
    assert difference.max() <= 2


# --------------------------------------------------------------------------------------------------------
# Concurrent decodes share one budget


def test_concurrent_decodes_take_turns_within_the_budget_and_a_huge_one_runs_alone() -> None:
    budget = DecodeMemory(capacity=100)
    running: list[int] = []
    seen: list[tuple[int, ...]] = []  # what was running each time a decode started
    lock = threading.Lock()

    def decode(nbytes: int) -> None:
        with budget.reserved(nbytes):
            with lock:
                running.append(nbytes)
                seen.append(tuple(running))
            threading.Event().wait(0.01)  # hold the reservation while the others try
            with lock:
                running.remove(nbytes)

    sizes = [40, 40, 40, 40, 250, 10, 10, 60]
    threads = [threading.Thread(target=decode, args=(n,)) for n in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(HANG_S)
    assert not any(thread.is_alive() for thread in threads)  # the decode above the whole budget did not deadlock
    assert len(seen) == len(sizes)
    for together in seen:
        assert sum(together) <= 100 or len(together) == 1, together  # over budget only alone
    assert budget.peak == 250


@pytest.mark.parametrize("value", ["lots", "0", "-5", "1.5"])
def test_a_bad_decode_memory_setting_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MINIGPT_DECODE_MEMORY_MB", value)
    with pytest.raises(MiniGPTError, match="MINIGPT_DECODE_MEMORY_MB") as caught:
        _capacity_from_env()
    assert "\n" not in str(caught.value)


def test_a_webp_whose_decoder_needs_more_than_the_decode_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.webp"
    Image.new("RGB", (1000, 1000), (1, 2, 3)).save(path, lossless=True)
    # WebP's decoder holds about 16 bytes a pixel: 1 MP needs 16 MB, over the 4 bytes x 2 MP allowed here.
    with pytest.raises(ImageLoadError, match=r"WEBP .* needs about 16 MB, more than the 8 MB") as caught:
        load_image(path, max_pixels=2_000_000)
    assert "\n" not in str(caught.value)
    assert load_image(path, max_pixels=5_000_000).image.size == (1000, 1000)  # within the limit: decoded


# --------------------------------------------------------------------------------------------------------
# The backend's image cache keeps its bound


@settings(max_examples=80, derandomize=True)
@given(st.lists(st.tuples(st.integers(1, 60), st.integers(1, 60)), min_size=1, max_size=12))
def test_the_image_cache_never_holds_more_pixels_than_its_budget(sizes: list[tuple[int, int]]) -> None:
    cache = _ImageCache(max_pixels=1000)
    for index, (width, height) in enumerate(sizes):
        cache.put(str(index), LoadedImage(Image.new("RGB", (width, height)), width * 10, height * 10, "x"))
        assert cache.held_pixels() <= 1000
        if width * height <= 1000:
            assert cache.get(str(index)) is not None  # the newest image is kept whenever it fits
