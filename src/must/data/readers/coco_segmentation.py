"""COCO panoptic and COCO-Stuff read as semantic segmentation (MuST sec. 3.1: the segmentation
teacher is trained on COCO panoptic used as semantic labels).

Category ids map to contiguous indices ``0..K-1`` in sorted id order; unlabeled pixels become
:data:`~must.data.sample.IGNORE_INDEX`.

* Panoptic: a JSON (``images``, ``annotations`` with ``file_name`` of a PNG and
  ``segments_info``, ``categories``) and a folder of PNGs whose RGB encodes a segment id
  (``id = R + 256 G + 256^2 B``, 0 = void). Every segment, crowd or not, paints its category;
  void is ignored.
* Stuff: PNGs of class ids (the official ``stuffthingmaps``: value = category id - 1, 255 =
  unlabeled), paired with images by key; the category list comes from COCO JSON files.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from must.data.readers.coco import CocoImages, CocoKey, file_key, parse_categories
from must.data.readers.compose import ComposedDataset, TargetSource
from must.data.readers.dense_maps import DenseMapSource, check_map_size, open_png, probe_png_size
from must.data.readers.errors import DataError
from must.data.readers.files import read_json
from must.data.readers.unlabeled import scan_image_files
from must.data.sample import IGNORE_INDEX


def _check_class_count(path: Path, count: int) -> None:
    if count > IGNORE_INDEX:
        raise DataError(path, f"{count} categories do not fit beside the ignore index {IGNORE_INDEX}")


class PanopticSemantic(TargetSource):
    """Semantic targets from a COCO panoptic JSON and its PNG folder, by image key."""

    def __init__(self, data: dict[str, Any], images: CocoImages, png_root: Path) -> None:
        self.task = "segmentation"
        self.images = images
        path = images.path
        self.category_ids, self.classes = parse_categories(data, path)
        _check_class_count(path, len(self.classes))
        self._index = {category_id: i for i, category_id in enumerate(self.category_ids)}
        self.pngs: dict[str, Path] = {}
        self.segments: dict[str, dict[int, int]] = {}
        self._problems: list[DataError] = []
        self._bad: dict[str, DataError] = {}
        annotations = data.get("annotations")
        if not isinstance(annotations, list):
            raise DataError(path, "no 'annotations' list")
        for position, annotation in enumerate(annotations):
            self._parse(annotation, position, png_root)

    def _parse(self, annotation: Any, position: int, png_root: Path) -> None:
        path = self.images.path
        if not (isinstance(annotation, dict) and annotation.get("image_id") in self.images.key_of_id
                and isinstance(annotation.get("file_name"), str)
                and isinstance(annotation.get("segments_info"), list)):
            self._problems.append(DataError(
                path, f"annotations[{position}] needs an 'image_id' listed in 'images', "
                      f"a 'file_name' and 'segments_info'"))
            return
        key = self.images.key_of_id[annotation["image_id"]]
        self.pngs[key] = png_root / annotation["file_name"]
        segments = {}
        for segment in annotation["segments_info"]:
            category = segment.get("category_id") if isinstance(segment, dict) else None
            if category not in self._index or not isinstance(segment.get("id"), int):
                self._bad.setdefault(key, DataError(
                    self.pngs[key], f"segments_info in {path} has segment {segment!r} with an "
                                    f"unknown category id or no integer id"))
                continue
            segments[segment["id"]] = self._index[category]
        self.segments[key] = segments

    def keys(self) -> Set[str]:
        return self.pngs.keys()

    def describe(self, key: str) -> str:
        return str(self.pngs[key])

    def problems(self) -> list[DataError]:
        return list(self._problems)

    def check(self, key: str, image_size: tuple[int, int]) -> None:
        if key in self._bad:
            raise self._bad[key]
        png = self.pngs[key]
        if not png.is_file():
            raise DataError(png, f"panoptic PNG not found (named in {self.images.path})")
        check_map_size(png, probe_png_size(png), image_size)

    def load(self, key: str, image_size: tuple[int, int]) -> torch.Tensor:
        png = self.pngs[key]
        rgb = open_png(png, ("RGB",)).astype(np.int64)
        check_map_size(png, rgb.shape[:2], image_size)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
        unique, inverse = np.unique(ids, return_inverse=True)
        segments = self.segments[key]
        unknown = [int(u) for u in unique if u != 0 and int(u) not in segments]
        if unknown:
            raise DataError(png, f"segment ids {unknown[:5]} are not in its segments_info "
                                 f"({self.images.path})")
        table = np.array([IGNORE_INDEX if u == 0 else segments[int(u)] for u in unique], np.int64)
        return torch.from_numpy(table[inverse.reshape(ids.shape)])


class CocoPanopticSemantic(ComposedDataset):
    """COCO panoptic JSON + images + PNG folder -> ``segmentation`` targets. ``png_root``
    defaults to the JSON's path without ``.json`` (``panoptic_val2017/``, the official layout)."""

    def __init__(self, annotation_file: str | Path, image_root: str | Path | Sequence[Path],
                 png_root: str | Path | None = None, *, skip_bad: bool = False,
                 limit: int | None = None, key_of: CocoKey = file_key) -> None:
        annotation_file = Path(annotation_file)
        data = read_json(annotation_file)
        images = CocoImages(data, annotation_file, image_root, key_of)
        pngs = Path(png_root) if png_root is not None else annotation_file.with_suffix("")
        super().__init__(f"coco_panoptic:{annotation_file}", images.entries,
                         [PanopticSemantic(data, images, pngs)], skip_bad=skip_bad, limit=limit,
                         require_target=True, problems=images.problems)


def read_stuff_map(path: Path, image_size: tuple[int, int], table: np.ndarray) -> torch.Tensor:
    """8-bit PNG of (offset) category ids -> contiguous indices; ``table[v]`` is -1 for a value
    that names no category."""
    values = open_png(path, ("L", "P"))
    check_map_size(path, values.shape, image_size)
    labels = table[values]
    if (labels < 0).any():
        unknown = sorted(int(v) for v in np.unique(values[labels < 0]))[:5]
        raise DataError(path, f"pixel values {unknown} name no known category")
    return torch.from_numpy(labels)


def stuff_categories(files: Sequence[Path]) -> tuple[list[int], list[str]]:
    """The union of the ``categories`` of several COCO JSONs (instances + stuff = stuffthingmaps)."""
    names: dict[int, str] = {}
    for path in files:
        ids, file_names = parse_categories(read_json(path), path)
        names.update(zip(ids, file_names))
    ids = sorted(names)
    return ids, [names[i] for i in ids]


class CocoStuffSemantic(ComposedDataset):
    """Images + PNGs of class ids joined by key -> ``segmentation`` targets.

    PNG value ``v`` is category id ``v + value_offset`` (the official ``stuffthingmaps`` store
    id - 1, hence the default 1); ``255`` is unlabeled. Images without a PNG are left out.
    """

    def __init__(self, image_root: str | Path, mask_root: str | Path,
                 category_files: Sequence[str | Path], *, value_offset: int = 1,
                 skip_bad: bool = False, limit: int | None = None) -> None:
        files = [Path(p) for p in category_files]
        if not files:
            raise DataError(Path(mask_root), "COCO-Stuff needs a JSON with the 'categories' list")
        ids, names = stuff_categories(files)
        _check_class_count(files[0], len(names))
        table = np.full(256, -1, dtype=np.int64)
        table[IGNORE_INDEX] = IGNORE_INDEX
        for index, category_id in enumerate(ids):
            value = category_id - value_offset
            if not 0 <= value < IGNORE_INDEX:
                raise DataError(files[0], f"category id {category_id} does not fit an 8-bit map "
                                          f"with offset {value_offset}")
            table[value] = index
        masks = DenseMapSource.scan("segmentation", Path(mask_root),
                                    partial(read_stuff_map, table=table), (".png",), names)
        entries, problems = scan_image_files(Path(image_root))
        super().__init__(f"coco_stuff:{mask_root}", entries, [masks], skip_bad=skip_bad,
                         limit=limit, require_target=True, problems=problems)
