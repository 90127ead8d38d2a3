"""COCO detection JSON: boxes for the detection task (MuST sec. 3.1: Objects365-like teacher data).

Conventions, as torchvision's detection references read COCO: category ids map to contiguous
indices ``0..K-1`` in sorted id order; crowd annotations (``iscrowd=1``) are dropped; boxes go
from ``[x, y, w, h]`` to ``[x1, y1, x2, y2]`` pixels. Every image listed in ``images`` is
labeled (an image without annotations has an empty box set). Keys are ``file_name`` without its
suffix. Checked at open time: JSON structure, unknown image / category ids, negative box sizes,
boxes outside the image (beyond a one-pixel tolerance), the declared size against the image file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence, Set
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from must.data.readers.compose import ComposedDataset, ImageEntry, TargetSource
from must.data.readers.errors import DataError
from must.data.readers.files import read_json

BOX_TOLERANCE = 1.0
"""Pixels a box may overshoot the image border: COCO's own boxes do by fractions of a pixel.
Such boxes are clipped; anything further out is an error."""

CocoKey = Callable[[str], str]
"""``file_name`` -> key."""


def file_key(file_name: str) -> str:
    return PurePosixPath(file_name).with_suffix("").as_posix()


def parse_categories(data: dict[str, Any], path: Path) -> tuple[list[int], list[str]]:
    """Category ids in sorted order (index = contiguous label) and their names."""
    categories = data.get("categories")
    if not isinstance(categories, list) or not categories:
        raise DataError(path, "no 'categories' list")
    names: dict[int, str] = {}
    for position, category in enumerate(categories):
        if not isinstance(category, dict) or not isinstance(category.get("id"), int):
            raise DataError(path, f"categories[{position}] has no integer 'id'")
        if category["id"] in names:
            raise DataError(path, f"category id {category['id']} appears twice")
        names[category["id"]] = str(category.get("name", category["id"]))
    ids = sorted(names)
    return ids, [names[i] for i in ids]


def image_folders(root: Path, split: str, images: str | None = None) -> list[Path]:
    """Where a COCO set's images may be: ``root/images`` when ``images`` is given, else
    ``<split>2017/`` (the official layout), ``images/`` beside the annotations (CVAT's COCO export
    and many hand-made sets) and the root itself, in that order."""
    if images is not None:
        return [root / images]
    return [root / f"{split}2017", root / "images", root]


def pick_image_folder(folders: Sequence[Path], file_names: Sequence[str]) -> Path:
    """The first of ``folders`` that holds the first listed image (a set's images share one
    folder, so one probe decides); else the first folder that exists, else the first."""
    first = file_names[0] if file_names else None
    for folder in folders:
        if first is not None and (folder / first).is_file():
            return folder
    return next((folder for folder in folders if folder.is_dir()), folders[0])


class CocoImages:
    """The ``images`` list of a COCO JSON: entries (sorted by image id) and declared sizes.

    ``image_root`` is the image folder, or several candidate folders (:func:`image_folders`):
    the one holding the first listed image is used, and a missing image's error names them all."""

    def __init__(self, data: dict[str, Any], path: Path, image_root: Path | Sequence[Path],
                 key_of: CocoKey = file_key) -> None:
        self.path = path
        self.entries: list[ImageEntry] = []
        self.key_of_id: dict[int, str] = {}
        self.declared_size: dict[str, tuple[int, int]] = {}
        self.problems: list[DataError] = []
        images = data.get("images")
        if not isinstance(images, list):
            raise DataError(path, "no 'images' list")
        folders = [Path(image_root)] if isinstance(image_root, (str, Path)) else list(image_root)
        names = [image["file_name"] for image in images
                 if isinstance(image, dict) and isinstance(image.get("file_name"), str)]
        folder = pick_image_folder(folders, names)
        # Quoted when an image is missing: where it was looked for and how to point elsewhere.
        named_in = (f"{path}; image folders tried: {', '.join(map(str, folders))}; set "
                    "data.images=DIR, relative to the dataset root, for another folder")
        for position, image in enumerate(images):
            if not (isinstance(image, dict) and isinstance(image.get("id"), int)
                    and isinstance(image.get("file_name"), str)):
                self.problems.append(DataError(path, f"images[{position}] needs an integer 'id' "
                                                     f"and a string 'file_name'"))
                continue
            if image["id"] in self.key_of_id:
                self.problems.append(DataError(path, f"image id {image['id']} appears twice"))
                continue
            key = key_of(image["file_name"])
            self.key_of_id[image["id"]] = key
            self.entries.append(ImageEntry(key, folder / image["file_name"], named_in))
            if isinstance(image.get("height"), int) and isinstance(image.get("width"), int):
                self.declared_size[key] = (image["height"], image["width"])
        order = {key: image_id for image_id, key in self.key_of_id.items()}
        self.entries.sort(key=lambda entry: order[entry.key])
        self.path_of = {entry.key: entry.path for entry in self.entries}

    def check_size(self, key: str, image_size: tuple[int, int]) -> None:
        declared = self.declared_size.get(key)
        if declared is not None and declared != image_size:
            raise DataError(self.path_of[key], f"{self.path} declares {declared[1]}x{declared[0]} "
                                               f"(WxH) but the image is {image_size[1]}x{image_size[0]}")


class CocoBoxes(TargetSource):
    """Detection targets of a COCO instances JSON, by image key."""

    def __init__(self, data: dict[str, Any], images: CocoImages) -> None:
        self.task = "detection"
        self.images = images
        path = images.path
        self.category_ids, self.classes = parse_categories(data, path)
        index = {category_id: i for i, category_id in enumerate(self.category_ids)}
        self._problems: list[DataError] = []
        self._bad: dict[str, DataError] = {}
        boxes: dict[str, list[tuple[Any, list[float], int]]] = {key: [] for key in images.path_of}
        annotations = data.get("annotations", [])
        if not isinstance(annotations, list):
            raise DataError(path, "'annotations' is not a list")
        for position, annotation in enumerate(annotations):
            parsed = self._parse(annotation, position, index)
            if parsed is not None:
                key, box, label = parsed
                boxes[key].append((annotation.get("id", position), box, label))
        self._boxes = {key: (np.array([b for _, b, _ in items], dtype=np.float32).reshape(-1, 4),
                             np.array([label for _, _, label in items], dtype=np.int64),
                             [annotation_id for annotation_id, _, _ in items])
                       for key, items in boxes.items()}

    def _parse(self, annotation: Any, position: int, index: dict[int, int]
               ) -> tuple[str, list[float], int] | None:
        path = self.images.path
        if not isinstance(annotation, dict) or annotation.get("image_id") not in self.images.key_of_id:
            image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
            self._problems.append(DataError(path, f"annotations[{position}] refers to image id "
                                                  f"{image_id!r}, which 'images' does not list"))
            return None
        key = self.images.key_of_id[annotation["image_id"]]
        if annotation.get("iscrowd", 0):
            return None
        name = f"annotation {annotation.get('id', position)} in {path}"
        category = annotation.get("category_id")
        bbox = annotation.get("bbox")
        if category not in index:
            self._flag(key, f"{name}: unknown category id {category!r} (known ids: "
                            f"{', '.join(map(str, self.category_ids[:20]))})")
        elif not (isinstance(bbox, list) and len(bbox) == 4
                  and all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
            self._flag(key, f"{name}: bbox {bbox!r} is not four finite numbers [x, y, w, h]")
        elif bbox[2] < 0 or bbox[3] < 0:
            self._flag(key, f"{name}: box {bbox} [x, y, w, h] has negative size")
        else:
            x, y, width, height = (float(v) for v in bbox)
            return key, [x, y, x + width, y + height], index[category]
        return None

    def _flag(self, key: str, problem: str) -> None:
        self._bad.setdefault(key, DataError(self.images.path_of[key], problem))

    def keys(self) -> Set[str]:
        return self._boxes.keys()

    def describe(self, key: str) -> str:
        return str(self.images.path)

    def problems(self) -> list[DataError]:
        return list(self._problems)

    def check(self, key: str, image_size: tuple[int, int]) -> None:
        if key in self._bad:
            raise self._bad[key]
        self.images.check_size(key, image_size)
        boxes, _, annotation_ids = self._boxes[key]
        height, width = image_size
        outside = ((boxes[:, 0] < -BOX_TOLERANCE) | (boxes[:, 1] < -BOX_TOLERANCE)
                   | (boxes[:, 2] > width + BOX_TOLERANCE) | (boxes[:, 3] > height + BOX_TOLERANCE))
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            raise DataError(self.images.path_of[key],
                            f"annotation {annotation_ids[first]} in {self.images.path}: box "
                            f"{boxes[first].tolist()} (xyxy) extends outside the {width}x{height} image")

    def load(self, key: str, image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        boxes, labels, _ = self._boxes[key]
        height, width = image_size
        boxes = boxes.copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        # Zero-area boxes carry no object; torchvision's COCO reference drops them the same way.
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        return {"boxes": torch.from_numpy(boxes[keep]), "labels": torch.from_numpy(labels[keep])}


class CocoDetection(ComposedDataset):
    """A COCO instances JSON + its image folder -> samples with a ``detection`` target."""

    def __init__(self, annotation_file: str | Path, image_root: str | Path | Sequence[Path], *,
                 skip_bad: bool = False, limit: int | None = None,
                 key_of: CocoKey = file_key) -> None:
        annotation_file = Path(annotation_file)
        data = read_json(annotation_file)
        images = CocoImages(data, annotation_file, image_root, key_of)
        super().__init__(f"coco:{annotation_file}", images.entries, [CocoBoxes(data, images)],
                         skip_bad=skip_bad, limit=limit, problems=images.problems)
