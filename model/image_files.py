"""Which files in a folder are images, and in what order: one rule for the desktop app and `autolabel`.

* Only names are read (no decoding), so a 100,000-image folder is listed at once; unreadable files are found when
  they are decoded.
* Paths are folder-relative with forward slashes, in natural order: ``img2`` before ``img10``, as a file manager
  shows them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from model.errors import MiniGPTError

__all__ = ["IMAGE_SUFFIXES", "ImageFolderError", "existing_folder", "is_image_name", "natural_key", "scan_folder"]

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

_DIGITS = re.compile(r"(\d+)")


class ImageFolderError(MiniGPTError):
    """The image folder is missing, not a folder, or cannot be listed."""


def is_image_name(name: str) -> bool:
    """Whether a file name has an image suffix (any case): ``IMG_1.JPG`` is an image."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def natural_key(path: str) -> tuple[tuple[tuple[tuple[str, int], ...], ...], str]:
    """Sort key putting ``img2`` before ``img10``, case-insensitively, folder by folder."""
    parts = tuple(
        tuple((text.casefold(), int(number)) for text, number in _pairs(component)) for component in path.split("/")
    )
    return parts, path  # the path itself breaks ties such as "a01" vs "a1" reproducibly


def _pairs(component: str) -> list[tuple[str, str]]:
    # re.split with a group alternates text, digits, text, ...; pair them so tuples always compare str with str
    pieces = _DIGITS.split(component)
    return [(pieces[i], pieces[i + 1] if i + 1 < len(pieces) else "-1") for i in range(0, len(pieces), 2)]


def scan_folder(folder: str | os.PathLike[str]) -> list[str]:
    """Folder-relative POSIX paths of the image files under ``folder``, recursively, in natural order.

    Hidden files and folders (names starting with a dot, e.g. macOS ``._IMG.jpg``), symlinked folders (they can
    loop) and anything that is not a regular file are skipped. Only names are read, so this is fast for big folders.

    Raises:
        ImageFolderError: ``folder`` does not exist, is not a folder or cannot be listed.
    """
    root = existing_folder(folder)
    found: list[str] = []
    pending: list[tuple[str, str]] = [(os.fspath(root), "")]
    while pending:
        directory, prefix = pending.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError as err:
            if not prefix:
                raise ImageFolderError(f"cannot list the folder {root}: {err.strerror or err}") from err
            continue  # an unreadable subfolder must not stop the others from being listed
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((entry.path, f"{prefix}{entry.name}/"))
                elif is_image_name(entry.name) and entry.is_file():  # is_file follows a symlink to a real file
                    found.append(prefix + entry.name)
            except OSError:
                continue
    found.sort(key=natural_key)
    return found


def existing_folder(folder: str | os.PathLike[str]) -> Path:
    """``folder`` resolved, or :class:`ImageFolderError` saying why it cannot be one."""
    path = Path(folder).expanduser()
    if not path.exists():
        raise ImageFolderError(f"the image folder {path} does not exist; check the path")
    if not path.is_dir():
        raise ImageFolderError(f"{path} is a file, not a folder; open the folder that holds the images")
    return path.resolve()
