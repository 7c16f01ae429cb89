"""A synthetic "shapes" detection dataset: coloured squares, circles and triangles on textured backgrounds.

It is small enough to train a tiny MiniGPT-v2 in minutes, and hard enough that the model must really localise
objects: image sizes and aspect ratios vary, backgrounds are textured, every shape has a referring phrase
("the small red circle on the left"), and some images are JPEGs whose stored pixels need EXIF rotation.

The tiny model sees images squashed to 64x64, so every shape's side is at least 14% of the image's smaller
side. The vocabulary below is fixed: the tiny tokenizer has whole-word tokens for it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from model.annotations import Annotation, Box, Category, Dataset, ImageRecord
from model.coco import write_coco

__all__ = [
    "CATEGORIES",
    "COLOURS",
    "EXIF_ORIENTATIONS",
    "SIZES",
    "ShapeSpec",
    "categories",
    "make_shapes",
    "referring_phrases",
    "render_scene",
    "shape_mask",
]

CATEGORIES: tuple[str, ...] = ("square", "circle", "triangle")  # COCO category ids 1, 2, 3
SUPERCATEGORY = "shape"
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 40),
}
# Side as a fraction of the image's smaller side: far enough apart that "small" and "large" are visible.
SIZES: dict[str, tuple[float, float]] = {"small": (0.14, 0.20), "large": (0.26, 0.38)}
EXIF_ORIENTATIONS: tuple[int, ...] = (3, 6, 8)

IMAGE_SIDES = (160, 320)  # width and height are drawn independently from this range
MAX_ASPECT = 1.67
JPEG_QUALITY = 92
GAP_FRACTION = 0.04  # empty space between boxes, as a fraction of the smaller image side
MAX_SHAPES_LIMIT = 8  # more large shapes than this do not fit without overlap
KEEP_AMBIGUOUS = 0.1  # share of scenes with an unphraseable shape that are kept rather than resampled

# The transpose that turns the upright image into the stored pixels: the inverse of what
# ImageOps.exif_transpose applies for each orientation (3: 180, 6: 270, 8: 90 degrees counter-clockwise).
_STORE_TRANSPOSE = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}
_ORIENTATION_TAG = 0x0112


@dataclass(frozen=True)
class ShapeSpec:
    """One drawn shape. ``box`` is its tight pixel box (x0, y0, x1, y1), x1/y1 exclusive, in the upright image."""

    category: str
    colour: str
    size: str
    box: tuple[int, int, int, int]

    @property
    def base_phrase(self) -> str:
        return f"the {self.size} {self.colour} {self.category}"


def _renamed(text: str, names: dict[str, str]) -> str:
    return " ".join(names.get(word, word) for word in text.split(" "))


def categories() -> list[Category]:
    """The dataset's categories, ids 1-3 in :data:`CATEGORIES` order."""
    return [Category(id=i, name=name) for i, name in enumerate(CATEGORIES, start=1)]


# --------------------------------------------------------------------------------------------------------
# Phrases


def referring_phrases(specs: list[ShapeSpec]) -> list[str | None]:
    """A phrase per shape that is unique in the scene, or None where no phrase of the grammar is.

    The phrase is "the {size} {colour} {shape}", plus " on the left"/" on the right" for a pair sharing those
    words that is separable horizontally, else " at the top"/" at the bottom" if separable vertically.
    """
    groups: defaultdict[str, list[int]] = defaultdict(list)
    for i, spec in enumerate(specs):
        groups[spec.base_phrase].append(i)
    phrases: list[str | None] = [None] * len(specs)
    for base, members in groups.items():
        if len(members) == 1:
            phrases[members[0]] = base
        elif len(members) == 2:
            for i, suffix in _pair_suffixes(specs[members[0]].box, specs[members[1]].box, members):
                phrases[i] = base + suffix
    return phrases


def _pair_suffixes(
    a: tuple[int, int, int, int], b: tuple[int, int, int, int], members: list[int]
) -> list[tuple[int, str]]:
    first, second = members
    if a[2] <= b[0]:
        return [(first, " on the left"), (second, " on the right")]
    if b[2] <= a[0]:
        return [(first, " on the right"), (second, " on the left")]
    if a[3] <= b[1]:
        return [(first, " at the top"), (second, " at the bottom")]
    if b[3] <= a[1]:
        return [(first, " at the bottom"), (second, " at the top")]
    return []  # overlapping boxes: no position word tells them apart


# --------------------------------------------------------------------------------------------------------
# Rendering


def shape_mask(category: str, width: int, height: int) -> np.ndarray:
    """Boolean mask of a shape filling a ``width`` x ``height`` box; it touches all four edges of the box."""
    # Twice the pixel centres' offsets from the box centre, as integers: exact arithmetic, so a pixel centre
    # that lies exactly on the outline is always inside (floats lose it for some sizes, e.g. 98).
    dx = np.abs(2 * np.arange(width, dtype=np.int64) + 1 - width)
    dy = np.abs(2 * np.arange(height, dtype=np.int64) + 1 - height)[:, None]
    if category == "square":
        return np.ones((height, width), dtype=bool)
    if category == "circle":
        # An ellipse, (dx / w)^2 + (dy / h)^2 <= 1; equal radii for the square boxes used here.
        return dx**2 * height**2 + dy**2 * width**2 <= width**2 * height**2
    if category == "triangle":
        # Upright isosceles, apex at the top centre. Row j takes the triangle's width at the row's bottom edge,
        # w * (j + 1) / h, so the top row is not empty and the mask fills its box exactly.
        rows = np.arange(1, height + 1, dtype=np.int64)[:, None]
        return dx * height <= width * rows
    raise ValueError(f"unknown shape {category!r}; expected one of {', '.join(CATEGORIES)}")


def render_scene(
    rng: np.random.Generator,
    *,
    min_shapes: int = 1,
    max_shapes: int = 4,
    size: tuple[int, int] | None = None,
) -> tuple[Image.Image, list[ShapeSpec]]:
    """Draw one upright RGB scene and return it with its shapes.

    ``size`` is (width, height); by default both are drawn from 160-320 with aspect ratio at most 1.67.
    Scenes where a shape would get no unique phrase are mostly resampled, so that case stays rare.
    """
    _check_counts(min_shapes, max_shapes)
    width, height = size if size is not None else _image_size(rng)
    while True:
        specs = _layout(rng, width, height, min_shapes, max_shapes)
        if None not in referring_phrases(specs) or rng.random() < KEEP_AMBIGUOUS:
            break
    pixels = _background(rng, width, height)
    for spec in specs:
        x0, y0, x1, y1 = spec.box
        pixels[y0:y1, x0:x1][shape_mask(spec.category, x1 - x0, y1 - y0)] = COLOURS[spec.colour]
    return Image.fromarray(pixels, "RGB"), specs


def _check_counts(min_shapes: int, max_shapes: int) -> None:
    if not 0 <= min_shapes <= max_shapes <= MAX_SHAPES_LIMIT:
        raise ValueError(
            f"need 0 <= min_shapes <= max_shapes <= {MAX_SHAPES_LIMIT}, got min_shapes={min_shapes}, "
            f"max_shapes={max_shapes}"
        )


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    low, high = IMAGE_SIDES
    while True:
        width, height = (int(v) for v in rng.integers(low, high + 1, size=2))
        if max(width, height) / min(width, height) <= MAX_ASPECT:
            return width, height


def _layout(rng: np.random.Generator, width: int, height: int, min_shapes: int, max_shapes: int) -> list[ShapeSpec]:
    """Non-overlapping shapes with a gap between boxes, by rejection sampling; a dead end restarts the scene."""
    short = min(width, height)
    gap = max(2, round(GAP_FRACTION * short))
    for _ in range(1000):
        count = int(rng.integers(min_shapes, max_shapes + 1))
        specs: list[ShapeSpec] = []
        while len(specs) < count:
            category = CATEGORIES[int(rng.integers(len(CATEGORIES)))]
            colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
            size = list(SIZES)[int(rng.integers(len(SIZES)))]
            side = round(rng.uniform(*SIZES[size]) * short)
            box = _place(rng, width, height, side, [s.box for s in specs], gap)
            if box is None:
                break
            specs.append(ShapeSpec(category, colour, size, box))
        else:
            return specs
    raise RuntimeError(f"could not place {min_shapes}-{max_shapes} shapes in a {width}x{height} image; use fewer")


def _place(
    rng: np.random.Generator,
    width: int,
    height: int,
    side: int,
    taken: list[tuple[int, int, int, int]],
    gap: int,
    tries: int = 50,
) -> tuple[int, int, int, int] | None:
    for _ in range(tries):
        x0 = int(rng.integers(0, width - side + 1))
        y0 = int(rng.integers(0, height - side + 1))
        box = (x0, y0, x0 + side, y0 + side)
        if all(_apart(box, other, gap) for other in taken):
            return box
    return None


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A low-contrast texture in muted greys and beiges: gradient + blotches + optional stripes + noise."""
    lightness = rng.uniform(125.0, 205.0)
    beige = rng.uniform(0.0, 16.0) * np.array([1.0, 0.55, -0.5])  # 0 is neutral grey
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    xs /= width
    ys /= height

    angle = rng.uniform(0.0, 2 * np.pi)
    field = rng.uniform(10.0, 30.0) * (np.cos(angle) * (xs - 0.5) + np.sin(angle) * (ys - 0.5))

    # Blotches: coarse noise, smoothly upsampled.
    coarse = rng.normal(0.0, 1.0, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)))).astype(np.float32)
    blotches = np.asarray(Image.fromarray(coarse, "F").resize((width, height), Image.Resampling.BICUBIC))
    field += rng.uniform(3.0, 9.0) * blotches

    if rng.random() < 0.5:
        stripe_angle = rng.uniform(0.0, np.pi)
        period = rng.uniform(0.04, 0.15)
        phase = (np.cos(stripe_angle) * xs * width + np.sin(stripe_angle) * ys * height) / (period * min(width, height))
        field += rng.uniform(2.0, 5.0) * np.sin(2 * np.pi * phase)

    field += rng.normal(0.0, rng.uniform(1.5, 4.0), size=(height, width)).astype(np.float32)
    rgb = lightness + beige + field[..., None]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------------
# The dataset on disk


def make_shapes(
    out_dir: str | os.PathLike[str],
    *,
    images: int,
    seed: int,
    min_shapes: int = 1,
    max_shapes: int = 4,
    exif_fraction: float = 0.2,
    names: dict[str, str] | None = None,
    progress: bool = False,
) -> Path:
    """Write ``images`` scenes to ``out_dir/images`` and their COCO file to ``out_dir/annotations.json``.

    Image ``i`` depends only on ``seed`` and ``i``, so the output is byte-for-byte reproducible. A share
    ``exif_fraction`` of the images are JPEGs with EXIF orientation 3, 6 or 8, stored rotated so that applying
    the orientation gives the upright scene; COCO sizes and boxes are always those of the upright scene.
    ``names`` renames categories (and the word in phrases), e.g. ``{"circle": "disc"}``: a labeller's taxonomy
    that differs from the one a model was trained with.
    Returns the path of the annotation file. Its ``file_name`` entries (``images/000001.png``) are relative to
    ``out_dir``, the file's own folder, so ``read_coco(path)`` finds the images.
    """
    if images < 0:
        raise ValueError(f"images must be >= 0, got {images}")
    if not 0.0 <= exif_fraction <= 1.0:
        raise ValueError(f"exif_fraction must be between 0 and 1, got {exif_fraction}")
    _check_counts(min_shapes, max_shapes)
    names = dict(names or {})
    unknown = sorted(set(names) - set(CATEGORIES))
    if unknown:
        raise ValueError(f"cannot rename {unknown}: the categories are {', '.join(CATEGORIES)}")
    if len(set(names.values()) | (set(CATEGORIES) - set(names))) != len(CATEGORIES):
        raise ValueError(f"renaming {names} would give two categories the same name")

    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    records: list[ImageRecord] = []
    for index in tqdm(range(1, images + 1), desc="shapes", unit="image", disable=not progress):
        rng = np.random.default_rng([seed, index])
        image, specs = render_scene(rng, min_shapes=min_shapes, max_shapes=max_shapes)
        path = _save(image, images_dir / f"{index:06d}", rng, exif_fraction)
        annotations = [
            Annotation(
                box=Box.from_xyxy(spec.box),
                label=names.get(spec.category, spec.category),
                phrase=_renamed(phrase, names) if phrase else None,
            )
            for spec, phrase in zip(specs, referring_phrases(specs), strict=True)
        ]
        records.append(ImageRecord(path=path, width=image.width, height=image.height, annotations=annotations))

    annotation_file = out / "annotations.json"
    write_coco(
        Dataset(
            categories=[c.model_copy(update={"name": names.get(c.name, c.name)}) for c in categories()],
            images=records,
        ),
        annotation_file,
        images_dir=out,
        supercategory=SUPERCATEGORY,
    )
    return annotation_file


def _save(image: Image.Image, stem: Path, rng: np.random.Generator, exif_fraction: float) -> Path:
    if rng.random() < exif_fraction:
        orientation = EXIF_ORIENTATIONS[int(rng.integers(len(EXIF_ORIENTATIONS)))]
        exif = Image.Exif()
        exif[_ORIENTATION_TAG] = orientation
        path = stem.with_suffix(".jpg")
        stored = image.transpose(_STORE_TRANSPOSE[orientation])
        stored.save(path, "JPEG", quality=JPEG_QUALITY, exif=exif.tobytes())
        return path
    path = stem.with_suffix(".png")
    image.save(path, "PNG", compress_level=3)  # noisy textures barely compress further; level 3 is much faster
    return path
