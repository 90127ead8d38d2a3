"""Video clips with a motion mask per frame: the targets of motion segmentation (Doersch &
Zisserman 2017 sec. 2: from one frame, predict which pixels move).

Layout (what ``must world video`` writes; bring your own clips in the same layout)::

    <root>/<clip>/<frame>.png            the frames: every image file directly in a clip folder
    <root>/<clip>/motion/<frame>.png     its motion mask, 8-bit (or 1-bit) PNG or ``.npy`` [H, W]:
                                         nonzero = the pixel shows something that moves
    <root>/<clip>/flow/<frame>.npy       optical flow (optional, not read here)

A clip folder is any non-hidden folder of ``root`` holding at least one image. Items are frames in
clip and frame order, keyed ``<clip>/<frame>``; each carries the target ``motion_segmentation``:
``uint8 [H, W]``, 1 where the pixel moves. A frame without its mask, a mask without its frame, a
mask of another size than its frame and an unreadable file are :class:`DataError` naming the file
(or, with ``skip_bad``, skipped and counted).
"""

from __future__ import annotations

from collections.abc import Set
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from must.data.readers.compose import ComposedDataset, ImageEntry
from must.data.readers.dense_maps import DenseMapSource, check_map_size, open_npy, open_png, plane_shape
from must.data.readers.errors import DataError
from must.data.readers.files import IMAGE_SUFFIXES

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


def _clip_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DataError(root, "directory not found")
    return [folder for folder in sorted(root.iterdir())
            if folder.is_dir() and not folder.name.startswith(".") and _frames(folder)]


def _frames(folder: Path) -> list[Path]:
    return [path for path in sorted(folder.iterdir()) if path.is_file()
            and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES]


def _mask_of(frame: Path) -> Path | None:
    candidates = [frame.parent / MASK_FOLDER / f"{frame.stem}{suffix}" for suffix in MASK_SUFFIXES]
    return next((path for path in candidates if path.is_file()), None)


def _orphan_masks(folder: Path, known: Set[str]) -> list[DataError]:
    masks = folder / MASK_FOLDER
    if not masks.is_dir():
        return []
    return [DataError(path, f"motion mask without a frame '{path.stem}' in {folder}")
            for path in sorted(masks.iterdir())
            if path.is_file() and not path.name.startswith(".") and path.stem not in known]


class VideoClips(ComposedDataset):
    """``root``'s clip folders -> one sample per frame with its motion mask (module docstring)."""

    def __init__(self, root: str | Path, *, skip_bad: bool = False, limit: int | None = None) -> None:
        root = Path(root)
        folders = _clip_folders(root)
        if not folders:
            raise DataError(root, "no clips: expected clip folders of frames with motion masks, "
                                  "<root>/<clip>/frame-00.png and <root>/<clip>/motion/frame-00.png "
                                  "(the layout `must world video` writes)")
        entries: list[ImageEntry] = []
        masks: dict[str, Path] = {}
        problems: list[DataError] = []
        for folder in folders:
            frames = _frames(folder)
            for frame in frames:
                mask = _mask_of(frame)
                if mask is None:
                    problems.append(DataError(frame, f"frame without its motion mask "
                                                     f"{folder / MASK_FOLDER / frame.stem}.png (or .npy)"))
                    continue
                key = f"{folder.name}/{frame.stem}"
                entries.append(ImageEntry(key, frame))
                masks[key] = mask
            problems += _orphan_masks(folder, {frame.stem for frame in frames})
        super().__init__(f"video:{root}", entries, [DenseMapSource(TASK, masks, read_motion_mask)], skip_bad=skip_bad,
                         limit=limit, problems=problems)
