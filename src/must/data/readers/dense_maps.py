"""Per-pixel maps stored one file per image: segmentation ids, depth, surface normals, instances.

Conventions on disk (targets as in :mod:`must.data.sample`):

* segmentation: 8-bit PNG (grayscale or palette: the palette index is the class), ``255`` =
  ignore (PASCAL VOC ``SegmentationClass``, the world's ``masks/``);
* depth: 16-bit PNG in millimetres (NYU-style) or ``.npy`` float in meters; ``0`` = invalid;
* normals: ``.npy`` ``[H, W, 3]`` or ``[3, H, W]`` unit vectors (DIODE-style), float16 or float32;
  the zero vector = invalid;
* instances: 16-bit PNG of instance ids, ``0`` = stuff.

:class:`DenseMapSource` finds a folder's maps by key and checks each map's size against its
image's header at open time. :class:`DenseFolders` is the NYU / DIODE-style dataset:
``root/images/`` plus ``root/depth/`` and/or ``root/normals/`` joined by key.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Set
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from must.data.readers.compose import ComposedDataset, TargetSource
from must.data.readers.errors import DataError
from must.data.readers.files import list_files, relative_key
from must.data.readers.unlabeled import KeyFunction, scan_image_files
from must.data.sample import IGNORE_INDEX
from must.errors import ConfigError

Size = tuple[int, int]
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")


def open_png(path: Path, modes: tuple[str, ...]) -> np.ndarray:
    try:
        with Image.open(path) as image:
            if image.mode not in modes:
                raise DataError(path, f"PNG mode {image.mode} not supported here; expected "
                                      f"{' or '.join(modes)}")
            return np.array(image)
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - PIL raises many types for broken files
        raise DataError(path, f"cannot decode map: {error}") from error


def open_npy(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        # allow_pickle=False: a map is plain numbers, never code.
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except Exception as error:  # noqa: BLE001 - numpy raises ValueError / OSError / EOFError
        raise DataError(path, f"not a readable .npy array: {error}") from error


def check_map_size(path: Path, size: Size, expected: Size) -> None:
    if size != expected:
        raise DataError(path, f"map is {size[0]}x{size[1]} (HxW) but its image is "
                              f"{expected[0]}x{expected[1]}")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def probe_png_size(path: Path) -> Size:
    """(height, width) from the PNG signature and IHDR chunk: 24 bytes, no decoder (opening every
    map of a dataset with PIL took seconds per 10,000 maps)."""
    try:
        with open(path, "rb") as file:
            header = file.read(24)
    except OSError as error:
        raise DataError(path, f"not a readable PNG: {error}") from error
    if len(header) < 24 or header[:8] != PNG_SIGNATURE or header[12:16] != b"IHDR":
        raise DataError(path, "not a readable PNG: no PNG signature and IHDR header")
    width, height = struct.unpack(">II", header[16:24])
    return height, width


def probe_npy_shape(path: Path) -> tuple[int, ...]:
    """An ``.npy`` array's shape from its header only."""
    try:
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, _ = read_header(file)
    except Exception as error:  # noqa: BLE001 - numpy raises ValueError / OSError / EOFError
        raise DataError(path, f"not a readable .npy array: {error}") from error
    return tuple(shape)


def plane_shape(path: Path, shape: tuple[int, ...]) -> Size:
    """[H, W] of a single-channel map stored as [H, W], [1, H, W] or [H, W, 1]."""
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    elif len(shape) == 3 and shape[2] == 1:
        shape = shape[:2]
    if len(shape) != 2:
        raise DataError(path, f"expected a [H, W] array, got shape {list(shape)}")
    return shape[0], shape[1]


def _normals_layout(path: Path, shape: tuple[int, ...], image_size: Size | None) -> str:
    """``"hwc"`` or ``"chw"``; the image size settles the ambiguous case H or W == 3."""
    layouts = []
    if len(shape) == 3 and shape[2] == 3:
        layouts.append(("hwc", (shape[0], shape[1])))
    if len(shape) == 3 and shape[0] == 3:
        layouts.append(("chw", (shape[1], shape[2])))
    if not layouts:
        raise DataError(path, f"normal map must be [H, W, 3] or [3, H, W], got {list(shape)}")
    matching = [name for name, size in layouts if size == image_size]
    return matching[0] if matching else layouts[0][0]


def probe_map_size(path: Path, task: str, image_size: Size | None = None) -> Size:
    """(height, width) of a map from its header only."""
    if path.suffix.lower() != ".npy":
        return probe_png_size(path)
    shape = probe_npy_shape(path)
    if task != "normals":
        return plane_shape(path, shape)
    layout = _normals_layout(path, shape, image_size)
    return (shape[0], shape[1]) if layout == "hwc" else (shape[1], shape[2])


def read_depth(path: Path, image_size: Size) -> Tensor:
    """Depth in meters, ``float32 [H, W]``; 0 where invalid (0 on disk, negative, NaN, inf)."""
    if path.suffix.lower() == ".npy":
        array = open_npy(path)
        if not np.issubdtype(array.dtype, np.number):
            raise DataError(path, f"depth must be numeric, got dtype {array.dtype}")
        depth = array.reshape(plane_shape(path, array.shape)).astype(np.float32)
    else:
        depth = open_png(path, SIXTEEN_BIT_MODES).astype(np.float32) / 1000.0  # mm -> m
    check_map_size(path, depth.shape, image_size)
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return torch.from_numpy(np.ascontiguousarray(depth))


def read_normals(path: Path, image_size: Size) -> Tensor:
    """Unit normals, ``float32 [3, H, W]``; renormalized (float16 storage loses a little), the
    zero vector where invalid."""
    array = open_npy(path)
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(path, f"normals must be floating point, got dtype {array.dtype}")
    if _normals_layout(path, array.shape, image_size) == "hwc":
        array = array.transpose(2, 0, 1)
    normals = np.ascontiguousarray(array, dtype=np.float32)
    check_map_size(path, normals.shape[1:], image_size)
    normals[:, ~np.isfinite(normals).all(axis=0)] = 0.0
    length = np.linalg.norm(normals, axis=0, keepdims=True)
    normals = np.where(length > 1e-6, normals / np.maximum(length, 1e-6), 0.0).astype(np.float32)
    return torch.from_numpy(normals)


def read_class_map(path: Path, image_size: Size, num_classes: int) -> Tensor:
    """Class ids from an 8-bit PNG (palette index or gray level), ``int64 [H, W]``; 255 ignore."""
    ids = open_png(path, ("P", "L"))
    check_map_size(path, ids.shape, image_size)
    bad = (ids >= num_classes) & (ids != IGNORE_INDEX)
    if bad.any():
        values = sorted(int(v) for v in np.unique(ids[bad]))[:5]
        raise DataError(path, f"pixel values {values} are not class ids (there are {num_classes} "
                              f"classes; {IGNORE_INDEX} = ignore)")
    return torch.from_numpy(ids.astype(np.int64))


def read_instance_map(path: Path, image_size: Size) -> Tensor:
    """Instance ids from a 16-bit (or 8-bit) PNG, ``int64 [H, W]``; 0 = stuff."""
    ids = open_png(path, SIXTEEN_BIT_MODES + ("L",))
    check_map_size(path, ids.shape, image_size)
    return torch.from_numpy(ids.astype(np.int64))


MapReader = Callable[[Path, Size], Tensor]


def scan_maps(directory: Path, task: str, suffixes: tuple[str, ...],
              key_of: KeyFunction = relative_key) -> tuple[dict[str, Path], list[DataError]]:
    """Key -> map file for every file under ``directory``; other files and second maps for one
    key are problems."""
    paths: dict[str, Path] = {}
    problems = []
    for path in list_files(directory):
        if path.suffix.lower() not in suffixes:
            problems.append(DataError(path, f"not a {task} map (expected {' or '.join(suffixes)})"))
            continue
        key = key_of(path, directory)
        if key in paths:
            problems.append(DataError(path, f"second {task} map for key '{key}' "
                                            f"(first: {paths[key].name})"))
            continue
        paths[key] = path
    return paths, problems


class DenseMapSource(TargetSource):
    """The maps of one task, one file per key. ``named_in`` is the list file that promised
    the maps, quoted when one is missing."""

    def __init__(self, task: str, paths: dict[str, Path], read: MapReader,
                 classes: list[str] | None = None, problems: list[DataError] | None = None,
                 named_in: str | None = None) -> None:
        self.task = task
        self.classes = classes
        self.paths = paths
        self.read = read
        self.named_in = named_in
        self._problems = problems or []

    @classmethod
    def scan(cls, task: str, directory: Path, read: MapReader, suffixes: tuple[str, ...],
             classes: list[str] | None = None, key_of: KeyFunction = relative_key
             ) -> DenseMapSource:
        """The maps found in ``directory`` (recursive), keyed by relative path without suffix."""
        paths, problems = scan_maps(directory, task, suffixes, key_of)
        return cls(task, paths, read, classes, problems)

    def keys(self) -> Set[str]:
        return self.paths.keys()

    def describe(self, key: str) -> str:
        return str(self.paths[key])

    def problems(self) -> list[DataError]:
        return list(self._problems)

    def check(self, key: str, image_size: Size) -> None:
        path = self.paths[key]
        if not path.is_file():
            where = f" (named in {self.named_in})" if self.named_in else ""
            raise DataError(path, f"{self.task} map not found{where}")
        check_map_size(path, probe_map_size(path, self.task, image_size), image_size)

    def load(self, key: str, image_size: Size) -> Tensor:
        return self.read(self.paths[key], image_size)


def depth_source(directory: Path, key_of: KeyFunction = relative_key) -> DenseMapSource:
    return DenseMapSource.scan("depth", directory, read_depth, (".png", ".npy"), key_of=key_of)


def normals_source(directory: Path, key_of: KeyFunction = relative_key) -> DenseMapSource:
    return DenseMapSource.scan("normals", directory, read_normals, (".npy",), key_of=key_of)


def segmentation_source(directory: Path, classes: list[str],
                        key_of: KeyFunction = relative_key) -> DenseMapSource:
    read = partial(read_class_map, num_classes=len(classes))
    return DenseMapSource.scan("segmentation", directory, read, (".png",), classes, key_of)


def instances_source(directory: Path, key_of: KeyFunction = relative_key) -> DenseMapSource:
    return DenseMapSource.scan("instances", directory, read_instance_map, (".png",),
                                  key_of=key_of)


DENSE_FOLDERS = {"depth": depth_source, "normals": normals_source}
"""Task -> source builder of the NYU / DIODE-style layout (folder name = task name)."""


class DenseFolders(ComposedDataset):
    """``root/images/<key>.<ext>`` joined with ``root/depth/<key>.png|.npy`` and / or
    ``root/normals/<key>.npy`` (NYU v2 depth, DIODE normals: MuST sec. 4.3 transfer tasks).
    ``tasks`` empty = every task folder present. Images with no map are left out."""

    def __init__(self, root: str | Path, tasks: tuple[str, ...] = (), *, skip_bad: bool = False,
                 limit: int | None = None) -> None:
        root = Path(root)
        unknown = [task for task in tasks if task not in DENSE_FOLDERS]
        if unknown:
            raise ConfigError(f"dense folders hold {', '.join(DENSE_FOLDERS)}; not {unknown}")
        chosen = tasks or tuple(task for task in DENSE_FOLDERS if (root / task).is_dir())
        if not chosen:
            raise DataError(root, f"no map folder found (expected {' or '.join(DENSE_FOLDERS)}/)")
        sources = [DENSE_FOLDERS[task](root / task) for task in chosen]
        entries, problems = scan_image_files(root / "images")
        super().__init__(f"dense:{root}", entries, sources, skip_bad=skip_bad, limit=limit,
                         require_target=True, problems=problems)
