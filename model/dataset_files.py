"""Does a dataset match its image files? Checked before any model work, by `evaluate` and `finetune` alike.

Every image a run will use must exist, be an image within the pixel limit, and be as large (upright, EXIF applied)
as the dataset says, because its boxes are in those pixels. Only the headers are read, so a whole dataset is checked
in seconds before the first training step or model call: a missing file used to end a `finetune` run midway, and a
declared 10^30 x 10^30 size trained for as long as the run lasted, every box quantised to nothing.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .annotations import Dataset, ImageRecord
from .errors import MiniGPTError
from .images import DEFAULT_MAX_PIXELS, image_size

__all__ = ["DatasetFilesError", "check_image_files", "image_path"]


class DatasetFilesError(MiniGPTError, ValueError):
    """An image file does not match the dataset (another size, too many pixels); the message names the image."""


def image_path(record: ImageRecord, images_dir: str | os.PathLike[str] | None = None) -> Path:
    """The file of ``record``: its path, taken relative to ``images_dir`` when one is given and the path is relative."""
    return record.path if images_dir is None or record.path.is_absolute() else Path(images_dir) / record.path


def check_image_files(
    dataset: Dataset, *, images_dir: str | os.PathLike[str] | None = None, indices: Iterable[int] | None = None
) -> None:
    """Check the images at ``indices`` (default: all) against their files, in dataset order.

    Raises:
        ImageLoadError: a file is missing, unreadable or not an image (the message names it).
        DatasetFilesError: a file has more pixels than an image may have, or another size than the dataset says.
    """
    for index in range(len(dataset.images)) if indices is None else indices:
        record = dataset.images[index]
        width, height = image_size(image_path(record, images_dir))
        if width * height > DEFAULT_MAX_PIXELS:
            raise DatasetFilesError(
                f"image {index} ({record.path}) has {width}x{height} pixels, more than the {DEFAULT_MAX_PIXELS:,} "
                "an image may have; downscale it (and its boxes) or leave it out"
            )
        if (width, height) != (record.width, record.height):
            # Boxes would be in another pixel grid than the image's; usually an EXIF rotation or a replaced file.
            raise DatasetFilesError(
                f"image {index} ({record.path}) is {width}x{height} upright, but the dataset says "
                f"{record.width}x{record.height}; fix the dataset's width/height (boxes are in upright pixels)"
            )
