"""Video clips with a motion mask per frame: the targets of motion segmentation (Doersch &
Zisserman 2017 sec. 2: from one frame, predict which pixels move).

Layout (what ``must world video`` writes; bring your own clips in the same layout)::

    <root>/<clip>/<frame>.png            the frames: every image file directly in a clip folder
    <root>/<clip>/motion/<frame>.png     its motion mask, 8-bit (or 1-bit) PNG or ``.npy`` [H, W]:
                                         nonzero = the pixel shows something that moves
    <root>/<clip>/flow/<frame>.npy       optical flow (optional, not read here)

A clip folder is any non-hidden folder of ``root`` holding at least one image. Items are frames in
clip and frame order, keyed ``<clip>/<frame>``; each carries the target ``motion_segmentation``:
``uint8 [H, W]``, 1 where the pixel moves. A frame without its mask, a mask without its frame, two
masks of one frame (``.png`` and ``.npy``), another file in a mask folder, a mask of another size
than its frame and an unreadable file are :class:`DataError` naming the file (or, with
``skip_bad``, skipped and counted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from must.data.readers.compose import ComposedDataset, ImageEntry
from must.data.readers.dense_maps import (DenseMapSource, check_map_size, open_npy, open_png, plane_shape,
                                          scan_maps)
from must.data.readers.errors import DataError
from must.data.readers.files import IMAGE_SUFFIXES, relative_key

TASK = "motion_segmentation"
MASK_FOLDER = "motion"
MASK_SUFFIXES = (".png", ".npy")
MASK_MODES = ("L", "1", "P")


def read_motion_mask(path: Path, image_size: tuple[int, int]) -> Tensor:
    """``uint8 [H, W]``, 1 where the pixel moves, from an 8-bit / 1-bit PNG or a numeric or
    boolean ``.npy`` ``[H, W]`` (``[1, H, W]`` and ``[H, W, 1]`` too)."""
    if path.suffix.lower() == ".npy":
        array = open_npy(path)
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise DataError(path, f"a motion mask must be numeric or boolean, got dtype {array.dtype}")
        array = array.reshape(plane_shape(path, array.shape))
    else:
        array = open_png(path, MASK_MODES)
    check_map_size(path, (int(array.shape[0]), int(array.shape[1])), image_size)
    return torch.from_numpy((array != 0).astype(np.uint8))


def _clips(root: Path) -> list[tuple[Path, list[Path]]]:
    """``(clip folder, its frames)`` for every non-hidden folder of ``root`` holding an image."""
    if not root.is_dir():
        raise DataError(root, "directory not found")
    folders = [folder for folder in sorted(root.iterdir())
               if folder.is_dir() and not folder.name.startswith(".")]
    return [(folder, frames) for folder in folders if (frames := _frames(folder))]


def _frames(folder: Path) -> list[Path]:
    return [path for path in sorted(folder.iterdir()) if path.is_file()
            and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES]


def _masks(folder: Path) -> tuple[dict[str, Path], list[DataError]]:
    """Key ``<clip>/<frame>`` -> the mask file, for every file of the clip's mask folder; another
    file there, or a second mask of one frame, is a problem (:func:`scan_maps`)."""
    directory = folder / MASK_FOLDER
    if not directory.is_dir():
        return {}, []
    return scan_maps(directory, TASK, MASK_SUFFIXES,
                     key_of=lambda path, masks: f"{folder.name}/{relative_key(path, masks)}")


class VideoClips(ComposedDataset):
    """``root``'s clip folders -> one sample per frame with its motion mask (module docstring)."""

    def __init__(self, root: str | Path, *, skip_bad: bool = False, limit: int | None = None) -> None:
        root = Path(root)
        clips = _clips(root)
        if not clips:
            raise DataError(root, "no clips: expected clip folders of frames with motion masks, "
                                  "<root>/<clip>/frame-00.png and <root>/<clip>/motion/frame-00.png "
                                  "(the layout `must world video` writes)")
        entries: list[ImageEntry] = []
        masks: dict[str, Path] = {}
        problems: list[DataError] = []
        for folder, frames in clips:
            found, bad = _masks(folder)
            masks.update(found)
            problems += bad
            for frame in frames:
                key = f"{folder.name}/{frame.stem}"
                if key not in found:
                    problems.append(DataError(frame, f"frame without its motion mask "
                                                     f"{folder / MASK_FOLDER / frame.stem}.png (or .npy)"))
                    continue
                entries.append(ImageEntry(key, frame))
        # A mask without its frame: the composer rejects every target whose image is missing.
        super().__init__(f"video:{root}", entries, [DenseMapSource(TASK, masks, read_motion_mask)],
                         skip_bad=skip_bad, limit=limit, problems=problems)
