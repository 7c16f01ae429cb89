"""A project is a folder of images plus its store: finding the images, opening the project, probing image sizes.

* Scanning lists file names only (no decoding), so a 10,000-image folder opens at once; sizes and unreadable files
  are found afterwards by :func:`probe_image`, which the GUI runs in a worker thread.
* Paths are folder-relative with forward slashes (what the store keeps), listed in natural order: ``img2`` before
  ``img10``, as a file manager shows them.
* Images that vanish from disk keep their boxes in the store (a person's work is never dropped because a drive was
  not mounted); :func:`missing_images` lists them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from model.errors import ImageLoadError
from model.image_files import (
    IMAGE_SUFFIXES,
    ImageFolderError,
    existing_folder,
    is_image_name,
    natural_key,
    scan_folder,
)
from model.images import image_size

from .display import load_display_image
from .records import ImageRow
from .store import STORE_SUFFIX, ProjectStore, default_store_path

__all__ = [
    "FOLDER_SETTING",
    "IMAGE_SUFFIXES",
    "ProjectFolderError",
    "is_image_name",
    "missing_images",
    "natural_key",
    "open_project",
    "probe_image",
    "project_folder",
    "reopen_project",
    "scan_folder",
]

FOLDER_SETTING = "folder"  # settings key holding the project folder's absolute path

# Decoding a thumbnail-sized draft is enough to find truncated pixel data, and cheap even for huge JPEGs.
_CHECK_PIXELS = 65_536

# The folder is the desktop's project; which files in it are images is model.image_files' rule, shared with autolabel.
ProjectFolderError = ImageFolderError


def open_project(folder: str | os.PathLike[str], store_path: str | os.PathLike[str] | None = None) -> ProjectStore:
    """Open (or create) the project of ``folder`` and add the images found there since the last time.

    The store defaults to ``default_store_path(folder)``, beside the folder. Existing images keep their boxes;
    images no longer on disk stay in the store (see :func:`missing_images`).

    Raises:
        ProjectFolderError: the folder does not exist or cannot be listed.
        StoreError: the store cannot be opened.
    """
    root = existing_folder(folder)
    paths = scan_folder(root)
    store = ProjectStore.open(store_path if store_path is not None else default_store_path(root))
    try:
        with store.batch():
            store.set_setting(FOLDER_SETTING, str(root))
            store.add_images(paths)
    except BaseException:
        store.close()
        raise
    return store


def project_folder(store: ProjectStore) -> Path:
    """The folder a store belongs to: the recorded one, or, if that is gone, the folder beside the store
    (``photos/`` next to ``photos.minigpt.sqlite``), so a folder moved together with its store still opens.

    Raises:
        ProjectFolderError: neither exists.
    """
    recorded = store.setting(FOLDER_SETTING)
    if recorded is not None and Path(recorded).is_dir():
        return Path(recorded)
    name = store.path.name
    if name.endswith(STORE_SUFFIX):
        beside = store.path.with_name(name[: -len(STORE_SUFFIX)]).resolve()
        if beside.is_dir():
            return beside
    if recorded is None:
        raise ProjectFolderError(f"{store.path} does not record its image folder; open the folder instead")
    raise ProjectFolderError(
        f"the image folder of {store.path}, {recorded}, does not exist any more; "
        "mount or move it back, or open the folder where it is now"
    )


def reopen_project(store_path: str | os.PathLike[str]) -> ProjectStore:
    """Open a project from its store file alone (e.g. the recent-projects list), rescanning its folder."""
    if not Path(store_path).is_file():  # opening would create an empty store that records no folder
        raise ProjectFolderError(f"there is no project store at {store_path}; open the image folder instead")
    store = ProjectStore.open(store_path)
    try:
        folder = project_folder(store)
    except BaseException:
        store.close()
        raise
    store.close()
    return open_project(folder, store_path)


def missing_images(store: ProjectStore, folder: str | os.PathLike[str]) -> list[ImageRow]:
    """The store's images whose files are no longer in ``folder``, in natural order."""
    root = Path(folder)
    rows = [row for row in store.images() if not _is_regular_file(root / row.path)]
    return sorted(rows, key=lambda row: natural_key(row.path))


def probe_image(path: str | os.PathLike[str], *, check_pixels: bool = False) -> tuple[int, int] | str:
    """The upright ``(width, height)`` of an image file, or the message saying why it cannot be read.

    Reads the header only (EXIF orientation included), so probing a whole folder is quick. Pixel data cut off
    by an interrupted copy is only found by decoding: ``check_pixels=True`` also decodes a small draft (cheap
    for JPEG). Pure and thread-safe, so the GUI runs it in a worker and writes the result to the store itself.
    Never raises for a bad file.
    """
    try:
        size = image_size(path)
        if check_pixels:
            _check_pixels(path)
        return size
    except ImageLoadError as err:
        return str(err)
    except Exception as err:  # a Pillow bug must not take down the worker that probes 10,000 files
        return f"cannot read image {os.fsdecode(os.fspath(path))!r}: unexpected error ({type(err).__name__}: {err})"


def _check_pixels(path: str | os.PathLike[str]) -> None:
    load_display_image(path, max_pixels=_CHECK_PIXELS)


def _is_regular_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False
