"""``manifest.json``: what made a pseudo-labeled dataset and what is in it (MuST sec. 3.2:
"a manifest that records which teacher (checkpoint hash) made which labels").

It names every teacher (task, checkpoint path and SHA-256, threshold, class names, and the batch
size and learning rate it was trained with, which the MuST loss rule needs: sec. 3.3), the source
dataset (its DatasetConfig), counts, every shard with its SHA-256, size and sample count,
per-task statistics, and the images skipped as bad input.

Statistics are running sums per shard (:func:`new_sums` / :func:`add_to_sums`), stored beside each
finished shard so a resumed run need not re-read old shards, merged in shard order (the same
floats in the same order whatever the process count) and summarized as means here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from must import config as config_lib
from must.data.sample import IGNORE_INDEX
from must.files import write_atomic
from must.label.shards import ShardError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
LABEL_SIZE = "source"
"""Dense labels and boxes are at the source image's (height, width): what the reader returns."""


@dataclass(frozen=True)
class TeacherEntry:
    name: str
    task: str
    kind: str
    """``must`` (our checkpoint), an adapter family (``torchvision_detection``...) or ``callable``."""
    input_size: int
    """The square size images are resized to for this teacher."""
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    threshold: float | None = None
    """The effective pseudo-label threshold (detection score, segmentation confidence)."""
    class_names: list[str] | None = None
    num_classes: int | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    """Rebuilds the task: ``build_task(task, **task_options)``."""
    batch_size: int | None = None
    learning_rate: float | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """Kind-specific facts (architecture, class mapping, source directory...)."""


@dataclass(frozen=True)
class ShardRecord:
    name: str
    sha256: str
    bytes: int
    samples: int
    first_index: int
    """Dataset index of the shard's first image; it covers ``[first_index, end_index)``."""
    end_index: int


@dataclass(frozen=True)
class SkippedImage:
    key: str | None
    path: str
    problem: str
    shard: str | None = None
    """The shard the image would have been in; ``None`` when the reader dropped it at open."""


@dataclass(frozen=True)
class Manifest:
    teachers: list[TeacherEntry]
    data: dict[str, Any]
    """The source dataset's DatasetConfig."""
    images_per_shard: int
    counts: dict[str, int]
    """``dataset_images`` (after open-time skips), ``labeled``, ``skipped``, ``shards``."""
    shards: list[ShardRecord]
    statistics: dict[str, dict[str, Any]]
    skipped: list[SkippedImage] = field(default_factory=list)
    top_k: int | None = None
    label_size: str = LABEL_SIZE
    config: dict[str, Any] = field(default_factory=dict)
    """The resolved LabelConfig."""
    format_version: int = FORMAT_VERSION

    @property
    def tasks(self) -> list[str]:
        return [teacher.task for teacher in self.teachers]

    def teacher_for(self, task: str) -> TeacherEntry:
        for teacher in self.teachers:
            if teacher.task == task:
                return teacher
        raise ShardError(f"no teacher for task '{task}'; tasks: {self.tasks}")


def write_manifest(manifest: Manifest, directory: Path) -> Path:
    path = Path(directory) / MANIFEST_NAME
    write_atomic(path, manifest_json(config_lib.to_dict(manifest)))
    return path


def read_manifest(directory: Path) -> Manifest:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest (is {directory} a finished `must label` output?)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ShardError(f"{path}: not valid JSON: {error}") from None
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise ShardError(f"{path}: manifest format {version!r}, this version reads {FORMAT_VERSION}")
    try:
        return config_lib.from_dict(Manifest, data)
    except config_lib.ConfigError as error:
        raise ShardError(f"{path}: malformed manifest: {error}") from None


def manifest_json(data: Any) -> str:
    """The text of the labeler's JSON files (manifest, run record, shard sidecars)."""
    return json.dumps(data, indent=1, sort_keys=False) + "\n"


# --- per-task statistics ----------------------------------------------------------------------


def new_sums(task: str, num_classes: int | None) -> dict[str, Any]:
    """Empty running sums of one task's labels (JSON-able, mergeable)."""
    counts = [0] * (num_classes or 0)
    if task == "classification":
        return {"images": 0, "max_probability": 0.0, "entropy": 0.0, "argmax_counts": counts}
    if task == "detection":
        return {"images": 0, "boxes": 0, "images_with_boxes": 0, "score": 0.0, "label_counts": counts}
    if task == "segmentation":
        return {"images": 0, "pixels": 0, "ignored_pixels": 0, "class_pixels": counts}
    return {"images": 0, "values": 0, "sum": 0.0, "min": None, "max": None}


def add_to_sums(sums: dict[str, Any], task: str, targets: Sequence[Any]) -> None:
    """Adds a batch of pseudo labels, one per image, to ``sums`` (in place; one tensor operation
    per batch, not per image: per-image statistics showed in the labeler's time)."""
    if not targets:
        return
    sums["images"] += len(targets)
    if task == "classification":
        probabilities = torch.stack([target.float().reshape(-1) for target in targets])
        sums["max_probability"] += float(probabilities.max(dim=1).values.sum())
        sums["entropy"] += float(torch.special.entr(probabilities).sum())  # -p log p, 0 at p = 0
        _add_histogram(sums["argmax_counts"], probabilities.argmax(dim=1))
    elif task == "detection":
        counts = [int(target["boxes"].shape[0]) for target in targets]
        sums["boxes"] += sum(counts)
        sums["images_with_boxes"] += sum(count > 0 for count in counts)
        sums["score"] += sum(float(target["scores"].float().sum()) if "scores" in target else float(count)
                             for target, count in zip(targets, counts))
        _add_histogram(sums["label_counts"], torch.cat([target["labels"].reshape(-1) for target in targets]))
    elif task == "segmentation":
        labels = torch.cat([target.reshape(-1) for target in targets])
        sums["pixels"] += labels.numel()
        ignored = labels == IGNORE_INDEX
        sums["ignored_pixels"] += int(ignored.sum())
        _add_histogram(sums["class_pixels"], labels[~ignored])
    else:
        values = torch.cat([target.float().reshape(-1) for target in targets])
        values = values[torch.isfinite(values)]
        sums["values"] += values.numel()
        if values.numel():
            sums["sum"] += float(values.double().sum())
            sums["min"] = _extreme(min, sums["min"], float(values.min()))
            sums["max"] = _extreme(max, sums["max"], float(values.max()))


def _add_histogram(counts: list[int], labels: Tensor) -> None:
    for label, count in enumerate(torch.bincount(labels.long()).tolist()):
        if count:
            _count(counts, label, count)


def merge_sums(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """``total + part`` (lists add element-wise, ``min`` / ``max`` combine)."""
    result = dict(total)
    for name, value in part.items():
        if name in ("min", "max"):
            result[name] = _extreme(min if name == "min" else max, result[name], value)
        elif isinstance(value, list):
            merged = list(result[name]) + [0] * max(0, len(value) - len(result[name]))
            for index, count in enumerate(value):
                merged[index] += count
            result[name] = merged
        else:
            result[name] += value
    return result


def summarize(task: str, sums: dict[str, Any]) -> dict[str, Any]:
    """Means for the manifest, e.g. mean boxes per image, ignored-pixel fraction."""
    images = max(sums["images"], 1)
    summary: dict[str, Any] = {"images": sums["images"]}
    if task == "classification":
        summary.update(mean_max_probability=sums["max_probability"] / images,
                       mean_entropy=sums["entropy"] / images, argmax_counts=sums["argmax_counts"])
    elif task == "detection":
        summary.update(mean_boxes_per_image=sums["boxes"] / images,
                       fraction_images_with_boxes=sums["images_with_boxes"] / images,
                       mean_score=sums["score"] / max(sums["boxes"], 1),
                       label_counts=sums["label_counts"])
    elif task == "segmentation":
        pixels = max(sums["pixels"], 1)
        summary.update(ignored_pixel_fraction=sums["ignored_pixels"] / pixels,
                       class_pixel_fractions=[count / pixels for count in sums["class_pixels"]])
    else:
        values = sums["values"]
        summary.update(mean=sums["sum"] / values if values else None, min=sums["min"], max=sums["max"])
    return summary


def _extreme(pick: Any, current: float | None, value: float | None) -> float | None:
    """``min`` / ``max`` where ``None`` means "nothing seen yet" (JSON has no infinity)."""
    if current is None or value is None:
        return value if current is None else current
    return pick(current, value)


def _count(counts: list[int], index: int, amount: int = 1) -> None:
    """Adds to ``counts[index]``, growing the list for a class beyond the known count."""
    if index >= len(counts):
        counts.extend([0] * (index + 1 - len(counts)))
    counts[index] += amount
