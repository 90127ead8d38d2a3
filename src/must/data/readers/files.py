"""File-level helpers shared by the readers: listing image folders, checking and decoding images,
reading JSON, each failing with a :class:`DataError` that names the file.

Decodability is checked in two steps. At open time :func:`probe_image` reads the header and runs
PIL's ``verify`` (cheap: it catches non-images, broken headers and truncated PNGs); at load time
:func:`load_image` decodes fully, which also catches what ``verify`` cannot see (a truncated JPEG),
with the same kind of error.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from must.data.readers.errors import DataError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                            ".ppm", ".pgm", ".pbm"})


def list_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (recursive, sorted), skipping hidden files and folders
    (``.DS_Store``, ``.ipynb_checkpoints``): they are never data."""
    if not root.is_dir():
        raise DataError(root, "directory not found")
    files = []
    for path in sorted(root.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
        if not hidden and path.is_file():
            files.append(path)
    return files


def relative_key(path: Path, root: Path) -> str:
    """The key of a file: its path relative to ``root``, without suffix, with ``/`` separators."""
    return path.relative_to(root).with_suffix("").as_posix()


def check_image_suffix(path: Path) -> None:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(path, f"not an image file (suffix '{path.suffix}'); image suffixes: "
                              f"{', '.join(sorted(IMAGE_SUFFIXES))}")


def probe_image(path: Path, named_in: str | Path | None = None) -> tuple[int, int]:
    """(height, width) of an image from its header, after PIL's integrity check."""
    if not path.is_file():
        where = f" (named in {named_in})" if named_in is not None else ""
        raise DataError(path, f"image file not found{where}")
    try:
        with Image.open(path) as image:
            width, height = image.size
            image.verify()
    # PIL raises a zoo of types for broken files (OSError, SyntaxError, struct.error, ...).
    except Exception as error:  # noqa: BLE001
        raise DataError(path, f"not a readable image: {error}") from error
    return height, width


def load_image(path: Path) -> Tensor:
    """Decodes an image to ``uint8 [3, H, W]`` RGB (grayscale replicated, alpha dropped)."""
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except FileNotFoundError as error:
        raise DataError(path, "image file not found") from error
    except Exception as error:  # noqa: BLE001 - see probe_image
        raise DataError(path, f"cannot decode image: {error}") from error
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file whose top level is an object."""
    if not path.is_file():
        raise DataError(path, "annotation file not found")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(path, f"not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise DataError(path, f"top level must be a JSON object, got {type(data).__name__}")
    return data
