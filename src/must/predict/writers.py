"""Every task's predictions in the formats users' tools read, one image at a time, each file
written under a temporary name and renamed when complete (a file that exists is whole).

Per image, under ``<out>/<task>/<key>`` (``key`` = the input's relative path without suffix):

* segmentation: ``<key>.png``, a palette PNG of class ids (``classes.json`` has the names and
  palette; a 16-bit greyscale PNG past 256 classes);
* depth: ``<key>.png``, 16-bit millimetres as our readers read it (0 = invalid), and with
  ``depth_npy`` ``<key>.npy`` float32 metres;
* normals: ``<key>.npy`` float32 ``[H, W, 3]`` unit vectors and ``<key>.png`` ``(n + 1) / 2`` RGB;
* detection / classification: ``<key>.json``, merged by :func:`merge_detections` /
  :func:`merge_classifications` into ``detections.json`` (COCO results: ``image_id``,
  ``category_id``, ``bbox`` xywh, ``score``) and ``classification.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from must.files import write_atomic
from must.tasks.segmentation import palette


@dataclass(frozen=True)
class ImageInfo:
    key: str
    image_id: int
    file_name: str
    """The input file relative to the data root (the key where the reader has no files)."""


@dataclass(frozen=True)
class WriteOptions:
    class_names: dict[str, list[str]]
    category_ids: list[int]
    """Detection label -> COCO category id."""
    score_threshold: float | None = None
    top_k: int = 5
    depth_npy: bool = False


def outputs_of(task: str, key: str, options: WriteOptions) -> list[str]:
    """The files ``task`` writes for ``key``, relative to the output directory."""
    names = {"segmentation": [".png"], "depth": [".png"] + ([".npy"] if options.depth_npy else []),
             "normals": [".npy", ".png"], "detection": [".json"], "classification": [".json"]}
    return [f"{task}/{key}{suffix}" for suffix in names[task]]


def _png(array: np.ndarray, colors: np.ndarray | None = None) -> Callable[[BinaryIO], None]:
    def write(file: BinaryIO) -> None:
        image = Image.fromarray(array)
        if colors is not None:
            image.putpalette(colors.reshape(-1).tolist())
        image.save(file, format="PNG")

    return write


def _npy(array: np.ndarray) -> Callable[[BinaryIO], None]:
    return lambda file: np.save(file, array, allow_pickle=False)


def _json(data: Any) -> str:
    return json.dumps(data)


def write_segmentation(out: Path, info: ImageInfo, ids: Tensor, options: WriteOptions) -> None:
    count = len(options.class_names["segmentation"])
    if count <= 256:
        write_atomic(out / f"segmentation/{info.key}.png",
                     _png(ids.numpy().astype(np.uint8), palette(count)))
    else:
        write_atomic(out / f"segmentation/{info.key}.png", _png(ids.numpy().astype(np.uint16)))


def write_depth(out: Path, info: ImageInfo, depth: Tensor, options: WriteOptions) -> None:
    metres = depth.numpy().astype(np.float32)
    millimetres = np.clip(np.nan_to_num(metres, nan=0.0) * 1000.0, 0, 65535).round().astype(np.uint16)
    write_atomic(out / f"depth/{info.key}.png", _png(millimetres))
    if options.depth_npy:
        write_atomic(out / f"depth/{info.key}.npy", _npy(metres))


def write_normals(out: Path, info: ImageInfo, normals: Tensor, options: WriteOptions) -> None:
    vectors = normals.permute(1, 2, 0).numpy().astype(np.float32)
    write_atomic(out / f"normals/{info.key}.npy", _npy(vectors))
    colors = ((np.clip(vectors, -1.0, 1.0) + 1.0) / 2.0 * 255.0).round().astype(np.uint8)
    write_atomic(out / f"normals/{info.key}.png", _png(colors))


def write_detection(out: Path, info: ImageInfo, detection: dict[str, Tensor], options: WriteOptions) -> None:
    """COCO results of one image: boxes xyxy -> ``[x, y, width, height]``."""
    scores = detection["scores"].float()
    keep = scores >= options.score_threshold if options.score_threshold is not None else \
        torch.ones_like(scores, dtype=torch.bool)
    boxes, labels = detection["boxes"][keep].float(), detection["labels"][keep]
    results = [{"image_id": info.image_id, "category_id": options.category_ids[int(label)],
                "bbox": [round(float(x0), 3), round(float(y0), 3), round(float(x1 - x0), 3),
                         round(float(y1 - y0), 3)],
                "score": round(float(score), 6)}
               for (x0, y0, x1, y1), label, score in zip(boxes.tolist(), labels.tolist(),
                                                        scores[keep].tolist())]
    write_atomic(out / f"detection/{info.key}.json", _json(results))


def write_classification(out: Path, info: ImageInfo, probabilities: Tensor, options: WriteOptions) -> None:
    names = options.class_names["classification"]
    top = probabilities.float().topk(min(options.top_k, len(probabilities)))
    line = {"image_id": info.image_id, "key": info.key, "file_name": info.file_name,
            "top": [{"class": names[i] if i < len(names) else "background", "index": int(i),
                     "probability": round(float(p), 6)}
                    for p, i in zip(top.values.tolist(), top.indices.tolist())]}
    write_atomic(out / f"classification/{info.key}.json", _json(line))


WRITERS: dict[str, Callable[[Path, ImageInfo, Any, WriteOptions], None]] = {
    "classification": write_classification,
    "detection": write_detection,
    "segmentation": write_segmentation,
    "depth": write_depth,
    "normals": write_normals,
}
"""Task -> writer of one image's prediction at its source size (one explicit dict)."""


def merge_detections(out: Path, images: Sequence[ImageInfo]) -> Path:
    """``detections.json``: every image's results in dataset order (a plain COCO results list)."""
    results: list[dict[str, Any]] = []
    for info in images:
        path = out / f"detection/{info.key}.json"
        if path.is_file():
            results += json.loads(path.read_text())
    write_atomic(out / "detections.json", _json(results))
    return out / "detections.json"


def merge_classifications(out: Path, images: Sequence[ImageInfo]) -> Path:
    lines = [(out / f"classification/{info.key}.json").read_text() for info in images
             if (out / f"classification/{info.key}.json").is_file()]
    write_atomic(out / "classification.jsonl", "".join(line + "\n" for line in lines))
    return out / "classification.jsonl"
