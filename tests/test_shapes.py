"""Tests for model.synthetic.shapes: generated files checked by pixels, COCO readers, EXIF and phrase grammar."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from model.coco import load_with_pycocotools, read_coco
from model.images import load_image
from model.synthetic.shapes import (
    CATEGORIES,
    COLOURS,
    EXIF_ORIENTATIONS,
    SIZES,
    ShapeSpec,
    make_shapes,
    referring_phrases,
    render_scene,
    shape_mask,
)

PHRASE = re.compile(
    r"the (?P<size>small|large) (?P<colour>red|green|blue|yellow) (?P<shape>square|circle|triangle)"
    r"(?P<where> on the left| on the right| at the top| at the bottom)?"
)
ORIENTATION_TAG = 0x0112


@pytest.fixture(scope="module")
def shapes50(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes(tmp_path_factory.mktemp("shapes50"), images=50, seed=3)


@pytest.fixture(scope="module")
def coco50(shapes50: Path) -> dict[str, Any]:
    return json.loads(shapes50.read_text())


def anns_by_image(coco: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        out[ann["image_id"]].append(ann)
    return out


def inside_point(category: str, bbox: list[float]) -> tuple[int, int]:
    """A pixel well inside the shape: the box centre, or for a triangle a point low on its axis."""
    x, y, w, h = bbox
    fy = 0.7 if category == "triangle" else 0.5
    return int(x + w / 2), int(y + h * fy)


def nearest_colour(rgb: tuple[int, ...]) -> str:
    return min(COLOURS, key=lambda name: sum((a - b) ** 2 for a, b in zip(rgb, COLOURS[name], strict=True)))


def file_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------------
# The dataset on disk


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    a = make_shapes(tmp_path / "a", images=12, seed=7)
    make_shapes(tmp_path / "b", images=12, seed=7)
    c = make_shapes(tmp_path / "c", images=12, seed=8)
    assert a == tmp_path / "a" / "annotations.json"
    assert file_bytes(tmp_path / "a") == file_bytes(tmp_path / "b")
    assert a.read_bytes() != c.read_bytes()
    # Image i depends only on (seed, i): a longer run starts with the same images.
    d = make_shapes(tmp_path / "d", images=14, seed=7)
    assert json.loads(d.read_text())["images"][:12] == json.loads(a.read_text())["images"]


def test_valid_coco_for_pycocotools_and_read_coco(shapes50: Path, coco50: dict[str, Any]) -> None:
    api = load_with_pycocotools(shapes50)
    assert api.getImgIds() == list(range(1, 51))
    assert api.getCatIds() == [1, 2, 3]
    assert [(c["name"], c["supercategory"]) for c in api.loadCats([1, 2, 3])] == [
        ("square", "shape"),
        ("circle", "shape"),
        ("triangle", "shape"),
    ]
    assert len(api.getAnnIds()) == len(coco50["annotations"])

    dataset = read_coco(shapes50)  # file_name is relative to the COCO file's folder
    assert [c.name for c in dataset.categories] == list(CATEGORIES)
    for record, img in zip(dataset.images, coco50["images"], strict=True):
        assert record.path == shapes50.parent / img["file_name"]
        assert record.path.is_file()
        assert re.fullmatch(r"images/\d{6}\.(png|jpg)", img["file_name"])
        assert 1 <= len(record.annotations) <= 4


def test_boxes_inside_visible_and_apart(coco50: dict[str, Any]) -> None:
    images = {img["id"]: img for img in coco50["images"]}
    for image_id, anns in anns_by_image(coco50).items():
        width, height = images[image_id]["width"], images[image_id]["height"]
        short = min(width, height)
        boxes = []
        for ann in anns:
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
            assert min(w, h) >= 0.12 * short  # still visible at 64x64
            assert ann["area"] == w * h
            boxes.append((x, y, x + w, y + h))
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                # Separated by a gap on at least one axis, so IoU is 0 with room to spare.
                assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


def test_pixels_inside_boxes_have_the_shapes_colour(shapes50: Path, coco50: dict[str, Any]) -> None:
    images = {img["id"]: img for img in coco50["images"]}
    for image_id, anns in anns_by_image(coco50).items():
        info = images[image_id]
        loaded = load_image(shapes50.parent / info["file_name"])
        assert (loaded.width, loaded.height) == (info["width"], info["height"])
        pixels = np.asarray(loaded.image)
        for ann in anns:
            category = CATEGORIES[ann["category_id"] - 1]
            x, y = inside_point(category, ann["bbox"])
            rgb = tuple(int(v) for v in pixels[y, x])
            match = PHRASE.fullmatch(ann.get("phrase", ""))
            colour = match["colour"] if match else nearest_colour(rgb)
            tolerance = 0 if info["file_name"].endswith(".png") else 24
            assert np.abs(np.subtract(rgb, COLOURS[colour])).max() <= tolerance, (info["file_name"], ann)
            if tolerance == 0:
                # The box is tight: the middle row of a square or circle, and a triangle's bottom row, reach
                # both of its vertical edges.
                bx, by, bw, bh = (int(v) for v in ann["bbox"])
                row = pixels[by + bh - 1] if category == "triangle" else pixels[by + bh // 2]
                assert (row[bx] == COLOURS[colour]).all() and (row[bx + bw - 1] == COLOURS[colour]).all()


def test_png_pixels_match_the_masks_exactly(shapes50: Path, coco50: dict[str, Any]) -> None:
    images = {img["id"]: img for img in coco50["images"]}
    checked = 0
    for image_id, anns in anns_by_image(coco50).items():
        info = images[image_id]
        if not info["file_name"].endswith(".png"):
            continue
        pixels = np.asarray(Image.open(shapes50.parent / info["file_name"]).convert("RGB"))
        for ann in anns:
            match = PHRASE.fullmatch(ann.get("phrase", ""))
            if match is None:
                continue
            x, y, w, h = (int(v) for v in ann["bbox"])
            mask = shape_mask(match["shape"], w, h)
            region = pixels[y : y + h, x : x + w]
            assert (region[mask] == COLOURS[match["colour"]]).all()
            checked += 1
    assert checked > 40


def test_exif_jpegs_load_upright(tmp_path: Path) -> None:
    ann_file = make_shapes(tmp_path, images=14, seed=1, exif_fraction=1.0)
    coco = json.loads(ann_file.read_text())
    anns = anns_by_image(coco)
    orientations = set()
    swapped = 0
    for img in coco["images"]:
        path = tmp_path / img["file_name"]
        assert path.suffix == ".jpg"
        with Image.open(path) as raw:
            orientation = raw.getexif()[ORIENTATION_TAG]
            stored = raw.size
        orientations.add(orientation)
        upright = (img["width"], img["height"])
        assert stored == (upright[::-1] if orientation in (6, 8) else upright)
        swapped += orientation in (6, 8) and upright[0] != upright[1]

        loaded = load_image(path)
        assert (loaded.width, loaded.height) == upright
        for ann in anns[img["id"]]:
            category = CATEGORIES[ann["category_id"] - 1]
            x, y = inside_point(category, ann["bbox"])
            rgb = loaded.image.getpixel((x, y))
            match = PHRASE.fullmatch(ann.get("phrase", ""))
            if match:
                assert np.abs(np.subtract(rgb, COLOURS[match["colour"]])).max() <= 24
    assert orientations == set(EXIF_ORIENTATIONS)
    assert swapped > 0


def test_png_only_when_exif_fraction_is_zero(tmp_path: Path) -> None:
    make_shapes(tmp_path, images=6, seed=2, exif_fraction=0.0)
    assert {p.suffix for p in (tmp_path / "images").iterdir()} == {".png"}


def test_phrases_follow_the_grammar_are_unique_and_true(coco50: dict[str, Any]) -> None:
    images = {img["id"]: img for img in coco50["images"]}
    missing = 0
    for image_id, anns in anns_by_image(coco50).items():
        phrases = [ann["phrase"] for ann in anns if "phrase" in ann]
        missing += len(anns) - len(phrases)
        assert len(set(phrases)) == len(phrases)
        short = min(images[image_id]["width"], images[image_id]["height"])
        for ann in anns:
            if "phrase" not in ann:
                continue
            match = PHRASE.fullmatch(ann["phrase"])
            assert match, ann["phrase"]
            assert match["shape"] == CATEGORIES[ann["category_id"] - 1]
            low, high = SIZES[match["size"]]
            assert low - 0.01 <= ann["bbox"][2] / short <= high + 0.01
            # A position word exactly when one other shape shares size, colour and shape.
            base = f"the {match['size']} {match['colour']} {match['shape']}"
            twins = [a for a in anns if a is not ann and a.get("phrase", "").startswith(base)]
            assert len(twins) == (1 if match["where"] else 0)
    assert missing <= 0.02 * len(coco50["annotations"])


def test_all_categories_colours_sizes_and_non_square_images_occur(coco50: dict[str, Any]) -> None:
    matches = [PHRASE.fullmatch(a["phrase"]) for a in coco50["annotations"] if "phrase" in a]
    assert {m["shape"] for m in matches if m} == set(CATEGORIES)
    assert {m["colour"] for m in matches if m} == set(COLOURS)
    assert {m["size"] for m in matches if m} == set(SIZES)
    assert {a["category_id"] for a in coco50["annotations"]} == {1, 2, 3}
    sizes = [(img["width"], img["height"]) for img in coco50["images"]]
    assert all(160 <= w <= 320 and 160 <= h <= 320 and max(w, h) / min(w, h) <= 1.67 for w, h in sizes)
    assert any(w > h for w, h in sizes) and any(w < h for w, h in sizes)
    assert {len(anns) for anns in anns_by_image(coco50).values()} == {1, 2, 3, 4}
    assert any(img["file_name"].endswith(".jpg") for img in coco50["images"])


def test_progress_bar_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_shapes(tmp_path, images=2, seed=0, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "shapes" in captured.err


@pytest.mark.parametrize(
    "kwargs",
    [
        {"images": -1},
        {"exif_fraction": 1.5},
        {"min_shapes": 3, "max_shapes": 2},
        {"max_shapes": 9},
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"images": 1, "seed": 0, **kwargs}
    with pytest.raises(ValueError):
        make_shapes(tmp_path, **arguments)


# --------------------------------------------------------------------------------------------------------
# Scenes, masks and phrases


def test_render_scene_is_deterministic_and_respects_the_settings() -> None:
    first = render_scene(np.random.default_rng(5), min_shapes=3, max_shapes=3, size=(200, 170))
    second = render_scene(np.random.default_rng(5), min_shapes=3, max_shapes=3, size=(200, 170))
    assert first[1] == second[1]
    assert np.array_equal(np.asarray(first[0]), np.asarray(second[0]))
    assert first[0].size == (200, 170) and first[0].mode == "RGB"
    assert len(first[1]) == 3


def test_background_is_muted_and_varied() -> None:
    means = []
    for seed in range(6):
        image, _ = render_scene(np.random.default_rng(seed), min_shapes=0, max_shapes=0)
        pixels = np.asarray(image).astype(float)
        spread = pixels.max(axis=2) - pixels.min(axis=2)
        assert np.percentile(spread, 99) < 60  # greys and beiges, far from the saturated shape colours
        assert pixels.std() > 2  # textured, not flat
        means.append(pixels.mean())
    assert max(means) - min(means) > 10


@pytest.mark.parametrize("category", CATEGORIES)
def test_masks_fill_their_boxes(category: str) -> None:
    for side in range(8, 130):
        mask = shape_mask(category, side, side)
        assert mask.shape == (side, side)
        assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()
        assert np.array_equal(mask, mask[:, ::-1])  # symmetric about the vertical axis
    triangle = shape_mask("triangle", 21, 21)
    assert triangle[-1].all() and triangle[0].sum() == 1 and triangle[0, 10]  # apex at the top centre
    circle = shape_mask("circle", 20, 20)
    assert not circle[0, 0] and circle[10, 10] and np.array_equal(circle, circle.T)
    with pytest.raises(ValueError, match="unknown shape 'star'"):
        shape_mask("star", 10, 10)


def spec(category: str, box: tuple[int, int, int, int], colour: str = "red", size: str = "small") -> ShapeSpec:
    return ShapeSpec(category=category, colour=colour, size=size, box=box)


def test_referring_phrases() -> None:
    specs = [
        spec("circle", (100, 0, 130, 30)),
        spec("circle", (10, 50, 40, 80)),
        spec("square", (0, 0, 30, 30), size="large"),
        spec("square", (5, 100, 35, 130), colour="blue"),
        spec("square", (5, 10, 35, 40), colour="blue"),
    ]
    assert referring_phrases(specs) == [
        "the small red circle on the right",
        "the small red circle on the left",
        "the large red square",
        "the small blue square at the bottom",
        "the small blue square at the top",
    ]
    three = [spec("triangle", (i * 40, 0, i * 40 + 30, 30)) for i in range(3)]
    assert referring_phrases([*three, spec("circle", (0, 50, 30, 80))]) == [None, None, None, "the small red circle"]
    overlapping = [spec("circle", (0, 0, 30, 30)), spec("circle", (10, 10, 40, 40))]
    assert referring_phrases(overlapping) == [None, None]
    assert referring_phrases([]) == []


def test_ambiguous_scenes_are_rare() -> None:
    rng = np.random.default_rng(11)
    total = unphrased = 0
    for _ in range(150):
        _, specs = render_scene(rng, min_shapes=4, max_shapes=4, size=(160, 160))
        phrases = referring_phrases(specs)
        total += len(phrases)
        unphrased += phrases.count(None)
    assert unphrased <= 0.01 * total
