"""Tests for model.images: real files written to tmp_path, checked by pixel values, sizes and messages."""

from __future__ import annotations

import dataclasses
import gc
import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from model.errors import ImageLoadError
from model.images import DEFAULT_MAX_PIXELS, LoadedImage, image_size, load_image, to_rgb

RED = (255, 0, 0)
BLUE = (0, 0, 255)
WHITE = (255, 255, 255)


def rgb_of(image: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    assert image.mode == "RGB"
    pixel = image.getpixel((x, y))
    assert isinstance(pixel, tuple)
    return (int(pixel[0]), int(pixel[1]), int(pixel[2]))


def rgb_at(loaded: LoadedImage, x: int, y: int) -> tuple[int, int, int]:
    return rgb_of(loaded.image, x, y)


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 0) -> None:
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), (actual, expected)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_blank_bilevel_png(path: Path, width: int, height: int) -> None:
    """A complete, valid 1-bit PNG of zeros, streamed row block by row block: huge header, tiny file."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    block = row * 1000
    compressed = [compressor.compress(block) for _ in range(height // 1000)]
    compressed.append(compressor.compress(row * (height % 1000)))
    compressed.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", b"".join(compressed))
        + png_chunk(b"IEND", b"")
    )


# --------------------------------------------------------------------------------------------------------
# EXIF orientation

# A 60x40 blue image with a red 30x20 top-left quadrant, stored with each EXIF orientation. Per the EXIF
# spec, the corner where the red quadrant must appear once the image is shown upright:
UPRIGHT_RED_CORNER = {
    1: "top-left",  # normal
    2: "top-right",  # mirrored horizontally
    3: "bottom-right",  # rotated 180
    4: "bottom-left",  # mirrored vertically
    5: "top-left",  # transposed (mirror along the main diagonal)
    6: "top-right",  # stored rotated; shown turned 90 degrees clockwise
    7: "bottom-right",  # transversed
    8: "bottom-left",  # shown turned 90 degrees counter-clockwise
}


def marked_image() -> Image.Image:
    image = Image.new("RGB", (60, 40), BLUE)
    image.paste(RED, (0, 0, 30, 20))
    return image


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_gives_upright_image(tmp_path: Path, image_format: str, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo.{image_format.lower()}"
    marked_image().save(path, image_format, exif=exif.tobytes(), quality=95)

    loaded = load_image(path)

    expected_size = (40, 60) if orientation >= 5 else (60, 40)
    assert (loaded.width, loaded.height) == expected_size
    assert loaded.image.size == expected_size
    assert loaded.image.mode == "RGB"
    assert image_size(path) == expected_size
    w, h = expected_size
    corners = {"top-left": (3, 3), "top-right": (w - 4, 3), "bottom-left": (3, h - 4), "bottom-right": (w - 4, h - 4)}
    red_corners = [
        corner for corner, (x, y) in corners.items() if rgb_at(loaded, x, y)[0] > 200 and rgb_at(loaded, x, y)[2] < 50
    ]
    assert red_corners == [UPRIGHT_RED_CORNER[orientation]]
    for corner, (x, y) in corners.items():
        assert_close(rgb_at(loaded, x, y), RED if corner in red_corners else BLUE, tolerance=8)


def test_image_size_finds_exif_stored_after_png_image_data(tmp_path: Path) -> None:
    # Some tools append the eXIf chunk after the pixel data; the upright size must still be right.
    buffer = io.BytesIO()
    marked_image().save(buffer, "PNG")
    data = buffer.getvalue()
    exif = Image.Exif()
    exif[0x0112] = 6
    iend = data.rindex(b"IEND") - 4
    path = tmp_path / "trailing-exif.png"
    path.write_bytes(data[:iend] + png_chunk(b"eXIf", exif.tobytes()) + data[iend:])

    assert image_size(path) == (40, 60)
    loaded = load_image(path)
    assert (loaded.width, loaded.height) == (40, 60)
    assert_close(rgb_at(loaded, 36, 3), RED)


# --------------------------------------------------------------------------------------------------------
# Broken inputs


def jpeg_bytes() -> bytes:
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def png_bytes() -> bytes:
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def corrupt_png_bytes() -> bytes:
    data = bytearray(png_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(range(64))  # garbage inside the compressed pixel data
    return bytes(data)


@pytest.mark.parametrize(
    ("file_name", "content", "cause"),
    [
        ("half.jpg", jpeg_bytes()[: len(jpeg_bytes()) // 2], "truncated"),
        ("half.png", png_bytes()[: len(png_bytes()) // 2], "truncated"),
        ("signature-only.png", png_bytes()[:4], "truncated"),
        ("empty.jpg", b"", "empty"),
        ("notes.png", b"these are my notes, not a picture\n", "not an image"),
        ("download.jpg", b"<!DOCTYPE html><html><body>403 Forbidden</body></html>", "HTML page"),
        ("random.jpg", bytes(np.random.default_rng(2).integers(0, 256, 500, dtype=np.uint8)), "not an image"),
        ("damaged.png", corrupt_png_bytes(), "corrupt"),
    ],
    ids=lambda value: value if isinstance(value, str) and "." in value else "",
)
def test_broken_file_raises_one_line_error_naming_file_and_cause(
    tmp_path: Path, file_name: str, content: bytes, cause: str
) -> None:
    path = tmp_path / file_name
    path.write_bytes(content)

    with pytest.raises(ImageLoadError) as raised:
        load_image(path)

    message = str(raised.value)
    assert file_name in message
    assert cause in message
    assert "\n" not in message
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "cat.jpg"
    for call in (load_image, image_size):
        with pytest.raises(ImageLoadError, match=r"cat\.jpg.*not found"):
            call(path)


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "images.png"
    folder.mkdir()
    for call in (load_image, image_size):
        with pytest.raises(ImageLoadError, match=r"images\.png.*directory"):
            call(folder)


def test_image_size_reports_broken_headers(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "readme.jpg"
    text.write_text("hello")
    with pytest.raises(ImageLoadError, match=r"empty\.png.*empty"):
        image_size(empty)
    with pytest.raises(ImageLoadError, match=r"readme\.jpg.*not an image"):
        image_size(text)


def test_broken_bytes_are_named_as_bytes() -> None:
    with pytest.raises(ImageLoadError, match=r"<bytes>.*empty"):
        load_image(b"")
    with pytest.raises(ImageLoadError, match=r"<bytes>.*truncated"):
        load_image(jpeg_bytes()[:-400])


def test_file_handles_are_closed(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes())
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(png_bytes()[:300])
    frames = [Image.new("RGB", (8, 8), colour) for colour in (RED, BLUE)]
    animated = tmp_path / "animated.gif"
    frames[0].save(animated, save_all=True, append_images=frames[1:])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_image(good)
        load_image(animated)
        image_size(good)
        with pytest.raises(ImageLoadError):
            load_image(truncated)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


# --------------------------------------------------------------------------------------------------------
# Decompression bombs


def test_image_over_the_pixel_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "large.png"
    Image.new("L", (3000, 3000)).save(path)

    with pytest.raises(ImageLoadError) as raised:
        load_image(path, max_pixels=1_000_000)

    message = str(raised.value)
    assert "large.png" in message
    assert "9,000,000" in message
    assert "1,000,000" in message
    assert load_image(path, max_pixels=9_000_000).width == 3000  # exactly at the limit is fine


def test_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    write_blank_bilevel_png(path, 20_000, 20_000)  # 400 million pixels in about 50 kB
    assert path.stat().st_size < 200_000
    images_created = Image.core.get_stats()["new_count"]  # Pillow counts every pixel buffer it creates

    with pytest.raises(ImageLoadError) as raised:
        load_image(path)

    message = str(raised.value)
    assert "400,000,000" in message
    assert f"{DEFAULT_MAX_PIXELS:,}" in message
    assert Image.core.get_stats()["new_count"] == images_created  # no pixel memory was allocated: nothing decoded
    assert image_size(path) == (20_000, 20_000)  # only the header is read


def test_large_photos_fit_the_default_limit() -> None:
    assert DEFAULT_MAX_PIXELS >= 12_000 * 9_000


def test_pillow_global_limit_neither_decides_nor_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shrink Pillow's own limit so ordinary files cross its warning (150 px) and error (400 px) thresholds:
    # max_pixels alone must decide, quietly, and Pillow's setting must be left as it was.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for side, file_name in ((12, "warns.png"), (20, "errors.png")):
        path = tmp_path / file_name
        Image.new("RGB", (side, side), RED).save(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            loaded = load_image(path)
        assert (loaded.width, loaded.height) == (side, side)
        assert image_size(path) == (side, side)
        with pytest.raises(ImageLoadError, match="limit of 100 pixels"):
            load_image(path, max_pixels=100)
    assert Image.MAX_IMAGE_PIXELS == 100


# --------------------------------------------------------------------------------------------------------
# Pixel formats


def test_cmyk_jpeg(tmp_path: Path) -> None:
    image = Image.new("CMYK", (32, 16), (255, 0, 0, 0))  # cyan
    image.paste((0, 0, 0, 255), (16, 0, 32, 16))  # black
    path = tmp_path / "print.jpg"
    image.save(path, "JPEG", quality=95)

    loaded = load_image(path)

    assert loaded.image.mode == "RGB"
    assert_close(rgb_at(loaded, 4, 8), (0, 255, 255), tolerance=4)
    assert_close(rgb_at(loaded, 28, 8), (0, 0, 0), tolerance=4)


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    levels = np.linspace(0, 65535, 256).round().astype(np.uint16)
    path = tmp_path / "depth.png"
    Image.fromarray(np.tile(levels, (4, 1))).save(path)

    loaded = load_image(path)

    grey = np.asarray(loaded.image)[0]
    assert (grey[:, 0] == grey[:, 1]).all() and (grey[:, 1] == grey[:, 2]).all()
    expected = np.floor(levels.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(grey[:, 0], expected)
    assert grey[0, 0] == 0 and grey[-1, 0] == 255 and grey[128, 0] == 128


def test_16_bit_pgm(tmp_path: Path) -> None:
    # Pillow opens a 16-bit PGM as 32-bit mode "I"; its real depth is still 16 bits.
    path = tmp_path / "scan.pgm"
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(path)

    loaded = load_image(path)

    assert [rgb_at(loaded, x, 0) for x in range(3)] == [(0, 0, 0), (128, 128, 128), WHITE]


@pytest.mark.parametrize("dtype", [np.dtype("<u2"), np.dtype(">u2")])
def test_to_rgb_16_bit_modes(dtype: np.dtype) -> None:
    image = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=dtype))
    assert image.mode.startswith("I;16")
    rgb = to_rgb(image)
    assert rgb.mode == "RGB"
    assert [rgb_of(rgb, x, 0) for x in range(3)] == [(0, 0, 0), (100, 100, 100), WHITE]


def test_palette_png_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (3, 1))
    image.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255])  # 0: black (made transparent), 1: red, 2: blue
    image.putpixel((1, 0), 1)
    image.putpixel((2, 0), 2)
    path = tmp_path / "icon.png"
    image.save(path, transparency=0)

    loaded = load_image(path)

    assert [rgb_at(loaded, x, 0) for x in range(3)] == [WHITE, RED, BLUE]


def test_rgba_half_transparent_pixels_over_white(tmp_path: Path) -> None:
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (255, 0, 0, 128))  # half-transparent red
    image.putpixel((1, 0), (0, 0, 0, 0))  # fully transparent "black"
    image.putpixel((2, 0), (0, 0, 255, 255))  # opaque blue
    path = tmp_path / "overlay.png"
    image.save(path)

    loaded = load_image(path)

    assert_close(rgb_at(loaded, 0, 0), (255, 127, 127), tolerance=1)
    assert rgb_at(loaded, 1, 0) == WHITE
    assert rgb_at(loaded, 2, 0) == BLUE


def test_grey_with_alpha(tmp_path: Path) -> None:
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (0, 128))  # half-transparent black
    image.putpixel((1, 0), (200, 255))  # opaque grey
    path = tmp_path / "mask.png"
    image.save(path)

    loaded = load_image(path)

    assert_close(rgb_at(loaded, 0, 0), (127, 127, 127), tolerance=1)
    assert rgb_at(loaded, 1, 0) == (200, 200, 200)


def test_single_transparent_colour_in_rgb_png(tmp_path: Path) -> None:
    image = Image.new("RGB", (2, 1), (10, 20, 30))
    image.putpixel((1, 0), (40, 50, 60))
    path = tmp_path / "keyed.png"
    image.save(path, transparency=(10, 20, 30))

    loaded = load_image(path)

    assert [rgb_at(loaded, x, 0) for x in range(2)] == [WHITE, (40, 50, 60)]


def test_bilevel(tmp_path: Path) -> None:
    image = Image.new("1", (2, 1), 0)
    image.putpixel((1, 0), 1)
    path = tmp_path / "fax.png"
    image.save(path)

    loaded = load_image(path)

    assert [rgb_at(loaded, x, 0) for x in range(2)] == [(0, 0, 0), WHITE]


def test_float_tiff(tmp_path: Path) -> None:
    normalised = tmp_path / "normalised.tif"
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)).save(normalised)
    ranged = tmp_path / "ranged.tif"
    Image.fromarray(np.array([[-3.0, 100.0, 300.0, np.nan]], dtype=np.float32)).save(ranged)

    first = load_image(normalised)
    second = load_image(ranged)

    assert [rgb_at(first, x, 0)[0] for x in range(3)] == [0, 128, 255]
    assert [rgb_at(second, x, 0)[0] for x in range(4)] == [0, 100, 255, 0]
    assert first.image.mode == second.image.mode == "RGB"


@pytest.mark.parametrize("mode", ["YCbCr", "LAB", "HSV", "RGBX"])
def test_to_rgb_colour_spaces(mode: str) -> None:
    colour = (200, 30, 60)
    converted = Image.new("RGB", (2, 2), colour).convert(mode)

    rgb = to_rgb(converted)

    assert rgb.mode == "RGB"
    assert_close(rgb_of(rgb, 0, 0), colour, tolerance=3)


# --------------------------------------------------------------------------------------------------------
# Other inputs


def test_bytes_input() -> None:
    loaded = load_image(png_bytes())
    assert loaded.source == "<bytes>"
    assert (loaded.width, loaded.height) == (96, 64)
    assert loaded.image.mode == "RGB"


def test_pil_input_is_converted_without_being_modified() -> None:
    original = Image.new("RGBA", (5, 4), (0, 0, 255, 0))

    loaded = load_image(original)

    assert loaded.image is not original
    assert original.mode == "RGBA" and original.getpixel((0, 0)) == (0, 0, 255, 0)
    assert (loaded.width, loaded.height) == (5, 4)
    assert rgb_at(loaded, 0, 0) == WHITE
    with pytest.raises(ImageLoadError, match="20 pixels"):
        load_image(original, max_pixels=10)


def test_pil_input_from_file_applies_exif_and_keeps_file_name(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    path = tmp_path / "rotated.jpg"
    marked_image().save(path, exif=exif.tobytes(), quality=95)

    with Image.open(path) as opened:
        loaded = load_image(opened)

    assert (loaded.width, loaded.height) == (40, 60)
    assert_close(rgb_at(loaded, 3, 56), RED, tolerance=8)
    assert loaded.source == str(path)


def test_loaded_image_is_immutable() -> None:
    loaded = load_image(Image.new("RGB", (2, 2)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.width = 3  # type: ignore[misc]


@pytest.mark.parametrize("file_name", ["animated.gif", "pages.tif"])
def test_multi_frame_files_give_the_first_frame(tmp_path: Path, file_name: str) -> None:
    frames = [Image.new("RGB", (8, 6), colour) for colour in (RED, (0, 255, 0), BLUE)]
    path = tmp_path / file_name
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)

    loaded = load_image(path)

    assert (loaded.width, loaded.height) == (8, 6)
    assert rgb_at(loaded, 4, 3) == RED


# --------------------------------------------------------------------------------------------------------
# Decoding only the pixels the caller will use (fit_pixels / fit_side)


def big_marked_image(size: tuple[int, int] = (600, 400)) -> Image.Image:
    """``marked_image`` at ``size``: blue, with a red top-left quadrant."""
    return marked_image().resize(size, Image.Resampling.NEAREST)


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "TIFF"])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_reduced_images_are_upright_and_keep_the_full_size(tmp_path: Path, image_format: str, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"photo.{image_format.lower()}"
    big_marked_image().save(path, image_format, exif=exif.tobytes(), quality=95)

    # JPEG: decoded at 1/4 by libjpeg (150x100), then downscaled; PNG and TIFF: decoded whole, downscaled.
    loaded = load_image(path, fit_pixels=12_000)

    full = (400, 600) if orientation >= 5 else (600, 400)
    assert (loaded.width, loaded.height) == full == image_size(path)  # the frame boxes are measured in
    w, h = loaded.image.size
    assert loaded.reduced and w * h <= 12_000 and loaded.image.mode == "RGB"
    assert (w < h) == (full[0] < full[1])  # turned like the full image
    assert loaded.scale == pytest.approx(full[0] / w)
    corners = {"top-left": (3, 3), "top-right": (w - 4, 3), "bottom-left": (3, h - 4), "bottom-right": (w - 4, h - 4)}
    red = [
        corner for corner, (x, y) in corners.items() if rgb_at(loaded, x, y)[0] > 200 and rgb_at(loaded, x, y)[2] < 50
    ]
    assert red == [UPRIGHT_RED_CORNER[orientation]]


def test_a_big_jpeg_is_decoded_reduced_by_libjpeg(tmp_path: Path) -> None:
    path = tmp_path / "camera.jpg"
    big_marked_image((4000, 3000)).save(path, quality=90)

    loaded = load_image(path, fit_pixels=800_000)

    # 1/4 scale is 1000x750, within 1.5 x the request, so libjpeg's reduced decode is the result as it is: a full
    # decode downscaled would be 1032x774 and would have held 12 MP.
    assert loaded.image.size == (1000, 750) and (loaded.width, loaded.height) == (4000, 3000)
    with Image.open(path) as reference:
        reference.draft("RGB", (1000, 750))
        assert np.array_equal(np.asarray(loaded.image), np.asarray(reference.convert("RGB")))


def test_fit_side_bounds_the_longer_side_exactly(tmp_path: Path) -> None:
    path = tmp_path / "wide.png"
    big_marked_image((1000, 700)).save(path)
    assert load_image(path, fit_side=448).image.size == (448, 313)
    assert load_image(path, fit_side=448, fit_pixels=10_000).image.size == (119, 83)  # the tighter bound wins
    exif = Image.Exif()
    exif[0x0112] = 6
    tall = tmp_path / "tall.png"
    big_marked_image((1000, 700)).save(tall, exif=exif.tobytes())
    assert load_image(tall, fit_side=448).image.size == (313, 448)


def test_images_within_the_bounds_are_loaded_as_without_them(tmp_path: Path) -> None:
    path = tmp_path / "small.jpg"
    big_marked_image().save(path, quality=90)
    plain = load_image(path)
    for bounded in (load_image(path, fit_pixels=240_000), load_image(path, fit_side=600)):
        assert not bounded.reduced and bounded.scale == 1.0
        assert (bounded.width, bounded.height) == (plain.width, plain.height)
        assert np.array_equal(np.asarray(bounded.image), np.asarray(plain.image))


def test_pil_images_and_bytes_are_reduced_too(tmp_path: Path) -> None:
    original = big_marked_image()
    loaded = load_image(original, fit_side=60)
    assert loaded.image.size == (60, 40) and (loaded.width, loaded.height) == (600, 400)
    assert original.size == (600, 400) and original.mode == "RGB"  # the caller's image is left alone
    buffer = io.BytesIO()
    original.save(buffer, "JPEG")
    from_bytes = load_image(buffer.getvalue(), fit_pixels=2_400)
    assert from_bytes.source == "<bytes>" and from_bytes.image.size == (60, 40) and from_bytes.width == 600


def test_reduced_decoding_reports_damage_like_a_full_decode(tmp_path: Path) -> None:
    cut = tmp_path / "cut.jpg"
    whole = io.BytesIO()
    big_marked_image((640, 480)).save(whole, "JPEG")
    cut.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    html = tmp_path / "login.jpg"
    html.write_text("<html><body>login required</body></html>")
    for path in (cut, html, tmp_path / "missing.jpg"):
        with pytest.raises(ImageLoadError) as full:
            load_image(path)
        with pytest.raises(ImageLoadError) as reduced:
            load_image(path, fit_pixels=10_000)
        assert str(reduced.value) == str(full.value)
    with pytest.raises(ImageLoadError, match="limit of 100 pixels"):  # the bomb check comes first
        load_image(cut, max_pixels=100, fit_pixels=50)
    for bad in ({"fit_pixels": 0}, {"fit_side": -1}):
        with pytest.raises(ValueError, match="must be positive"):
            load_image(cut, **bad)


_GIF_BOMB = bytes.fromhex(
    "474946383761040004008000000000000000712c004800000400207c0008090001081c48b0208080003b"
)  # a 4x4 GIF whose frame descriptor was changed to declare 585,822,336 pixels


def test_a_gif_frame_over_pillows_bomb_limit_is_a_one_line_image_error() -> None:
    with pytest.raises(ImageLoadError, match="decompression-bomb limit"):
        load_image(_GIF_BOMB)
    with pytest.raises(ImageLoadError, match="decompression-bomb limit"):
        load_image(_GIF_BOMB, fit_side=448)


@settings(max_examples=300, derandomize=True)
@given(
    edits=st.lists(st.tuples(st.integers(6, 40), st.integers(0, 255)), min_size=1, max_size=4),
    screen=st.none() | st.tuples(st.integers(0, 65535), st.integers(0, 65535)),
)
def test_damaged_gif_headers_load_or_fail_with_an_image_error(edits: list[tuple[int, int]], screen) -> None:
    buffer = io.BytesIO()
    Image.new("P", (4, 4)).save(buffer, "GIF")
    data = bytearray(buffer.getvalue())
    for position, value in edits:
        data[position % len(data)] = value
    if screen is not None:
        struct.pack_into("<HH", data, 6, *screen)
    try:
        loaded = load_image(bytes(data))
    except ImageLoadError:
        return  # refused with the project's one-line error: what every caller (backend, CLI, desktop) handles
    assert loaded.image.mode == "RGB"
