"""PASCAL VOC: XML boxes and palette PNG masks (MuST sec. 4.3: VOC detection and segmentation are
downstream transfer tasks).

``root`` is a ``VOC2007`` / ``VOC2012`` folder. ``ImageSets/Main/<split>.txt`` lists the
detection images (``Annotations/<id>.xml``), ``ImageSets/Segmentation/<split>.txt`` the
segmentation images (``SegmentationClass/<id>.png``, palette index = class, 255 = ignore). With
both tasks, an image carries the targets its lists give it. VOC boxes are 1-based inclusive;
they become 0-based ``[x1, y1, x2, y2]`` pixels (``x1 = xmin - 1``, as detectron2 reads VOC).
Every box is kept, with its ``"difficult"`` flag in the detection target: the VOC metric ignores
difficult objects rather than counting them as misses.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from collections.abc import Set
from functools import partial
from pathlib import Path

import numpy as np
import torch

from must.data.readers.coco import BOX_TOLERANCE
from must.data.readers.compose import ComposedDataset, ImageEntry, TargetSource
from must.data.readers.dense_maps import DenseMapSource, read_class_map
from must.data.readers.errors import DataError
from must.errors import ConfigError

VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor"]
VOC_SEGMENTATION_CLASSES = ["background", *VOC_CLASSES]
VOC_TASKS = {"detection": "Main", "segmentation": "Segmentation"}
"""Task -> its ``ImageSets`` sub-folder."""


def read_split(path: Path) -> list[str]:
    """Image ids of an ``ImageSets`` list (first token of each non-empty line)."""
    if not path.is_file():
        raise DataError(path, "split list not found")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _number(element: ElementTree.Element, tag: str, path: Path) -> float:
    text = element.findtext(tag)
    try:
        return float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(path, f"<{tag}> is {text!r}, not a number") from None


def parse_voc_xml(path: Path) -> tuple[tuple[int, int] | None, np.ndarray, np.ndarray, np.ndarray]:
    """(declared (H, W) or None, boxes float32 [N, 4] xyxy 0-based, labels int64 [N],
    difficult bool [N]) of one annotation file."""
    if not path.is_file():
        raise DataError(path, "annotation file not found")
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise DataError(path, f"not valid XML: {error}") from error
    size = root.find("size")
    declared = None
    if size is not None and size.findtext("width") and size.findtext("height"):
        declared = (int(_number(size, "height", path)), int(_number(size, "width", path)))
    boxes, labels, difficult = [], [], []
    for element in root.iter("object"):
        name = (element.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise DataError(path, f"unknown category '{name}' (VOC classes: {', '.join(VOC_CLASSES)})")
        box = element.find("bndbox")
        if box is None:
            raise DataError(path, f"object '{name}' has no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(box, tag, path) for tag in ("xmin", "ymin", "xmax", "ymax"))
        if xmax < xmin or ymax < ymin:
            raise DataError(path, f"box of '{name}' ({xmin}, {ymin}, {xmax}, {ymax}) has negative size")
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])
        labels.append(VOC_CLASSES.index(name))
        difficult.append(bool(int(_number(element, "difficult", path)))
                         if element.findtext("difficult") else False)
    return (declared, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
            np.array(difficult, bool))


class VocBoxes(TargetSource):
    """Detection targets from ``Annotations/<id>.xml``, parsed and checked at open time."""

    def __init__(self, root: Path, ids: list[str], named_in: Path) -> None:
        self.task = "detection"
        self.classes = list(VOC_CLASSES)
        self.named_in = named_in
        self.paths = {image_id: root / "Annotations" / f"{image_id}.xml" for image_id in ids}
        self._parsed: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def keys(self) -> Set[str]:
        return self.paths.keys()

    def describe(self, key: str) -> str:
        return str(self.paths[key])

    def check(self, key: str, image_size: tuple[int, int]) -> None:
        path = self.paths[key]
        if not path.is_file():
            raise DataError(path, f"annotation file not found (named in {self.named_in})")
        declared, boxes, labels, difficult = parse_voc_xml(path)
        height, width = image_size
        if declared is not None and declared != image_size:
            raise DataError(path, f"declares {declared[1]}x{declared[0]} (WxH) but the image is "
                                  f"{width}x{height}")
        outside = ((boxes[:, :2] < -BOX_TOLERANCE).any(axis=1) | (boxes[:, 2] > width + BOX_TOLERANCE)
                   | (boxes[:, 3] > height + BOX_TOLERANCE))
        if outside.any():
            first = boxes[int(np.flatnonzero(outside)[0])].tolist()
            raise DataError(path, f"box {first} (xyxy, 0-based) extends outside the "
                                  f"{width}x{height} image")
        self._parsed[key] = (boxes, labels, difficult)

    def load(self, key: str, image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
        if key not in self._parsed:
            self.check(key, image_size)
        boxes, labels, difficult = self._parsed[key]
        height, width = image_size
        boxes = boxes.copy()
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        return {"boxes": torch.from_numpy(boxes), "labels": torch.from_numpy(labels.copy()),
                "difficult": torch.from_numpy(difficult.copy())}


def available_voc_tasks(root: Path, split: str) -> tuple[str, ...]:
    return tuple(task for task, folder in VOC_TASKS.items()
                 if (root / "ImageSets" / folder / f"{split}.txt").is_file())


class VocDataset(ComposedDataset):
    """A VOC year folder -> samples with ``detection`` and / or ``segmentation`` targets.
    ``tasks`` empty = every task whose split list exists."""

    def __init__(self, root: str | Path, split: str = "train", tasks: tuple[str, ...] = (), *,
                 skip_bad: bool = False, limit: int | None = None) -> None:
        root = Path(root)
        unknown = [task for task in tasks if task not in VOC_TASKS]
        if unknown:
            raise ConfigError(f"VOC holds {', '.join(VOC_TASKS)}; not {unknown}")
        chosen = tasks or available_voc_tasks(root, split)
        if not chosen:
            raise DataError(root, f"no ImageSets/Main/{split}.txt or "
                                  f"ImageSets/Segmentation/{split}.txt")
        entries: dict[str, ImageEntry] = {}
        sources: list[TargetSource] = []
        for task in chosen:
            list_file = root / "ImageSets" / VOC_TASKS[task] / f"{split}.txt"
            ids = read_split(list_file)
            for image_id in ids:
                entries.setdefault(image_id, ImageEntry(
                    image_id, root / "JPEGImages" / f"{image_id}.jpg", str(list_file)))
            sources.append(self._source(task, root, ids, list_file))
        super().__init__(f"voc:{root}:{split}", list(entries.values()), sources,
                         skip_bad=skip_bad, limit=limit)

    @staticmethod
    def _source(task: str, root: Path, ids: list[str], list_file: Path) -> TargetSource:
        if task == "detection":
            return VocBoxes(root, ids, list_file)
        paths = {image_id: root / "SegmentationClass" / f"{image_id}.png" for image_id in ids}
        read = partial(read_class_map, num_classes=len(VOC_SEGMENTATION_CLASSES))
        return DenseMapSource("segmentation", paths, read, list(VOC_SEGMENTATION_CLASSES),
                              named_in=str(list_file))
