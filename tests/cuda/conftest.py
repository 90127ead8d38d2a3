"""Shared by the CUDA tests (marked ``cuda``: skipped without a GPU, run by ``make gpu-check``):
the test suite's tiny model and worlds, and device-agnostic helpers that run the same work on
``cpu`` and ``cuda`` so each test can hold the GPU's result against the CPU's.

The helpers take the device as an argument so they can be checked on a machine without a GPU
(``cpu`` against ``cpu``); only the tests themselves need CUDA.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from must import distributed
from must.data.loader import make_loader
from must.data.readers import DatasetConfig, ReaderDataset, open_dataset
from must.data.sample import Batch
from must.label.labeler import LabelConfig, label_dataset
from must.label.manifest import read_manifest
from must.label.shards import decode_labels, iterate_shard
from must.models import ModelConfig
from must.tasks import Task, build_task
from must.train.engine import autocast, compute_losses
from must.world import generate

from ..label.conftest import TEACHER_OPTIONS, make_teacher
from ..stages.conftest import pseudo, teachers, world  # noqa: F401  (fixtures of the student test)

CUDA_GROUP = "cuda"
"""One xdist group: the GPU tests share one worker (and the GPU) and the session fixtures."""
TINY = ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16)
SIZE = 32
SUPERVISED = ("classification", "detection", "segmentation", "depth", "normals")


@pytest.fixture(scope="session")
def cuda_device() -> torch.device:
    return distributed.pick_device("cuda")


@pytest.fixture(scope="session")
def transfer_set(tmp_path_factory: pytest.TempPathFactory) -> DatasetConfig:
    """8 images of the world's transfer domain: the one with a label for every supervised task."""
    root = generate("transfer", tmp_path_factory.mktemp("cuda_transfer"), count=8, size=SIZE, seed=0,
                    progress=False)
    return DatasetConfig(format="world", root=str(root))


def supervised_tasks(dataset: ReaderDataset) -> dict[str, Task]:
    """Every supervised task of MuST (sec. 3.1) and normals (sec. 4.2), with the world's classes."""
    options: dict[str, dict[str, Any]] = {
        name: {"num_classes": len(classes), "class_names": list(classes)}
        for name, classes in dataset.classes.items()}
    return {name: build_task(name, **options.get(name, {})) for name in SUPERVISED}


def first_batch(dataset: ReaderDataset, tasks: Mapping[str, Task], batch_size: int = 8) -> Batch:
    return next(make_loader([dataset], tasks, batch_size, seed=0, output_size=SIZE))


def step_losses(model: nn.Module, tasks: Mapping[str, Task], batch: Batch, device: torch.device,
                precision: str) -> dict[str, float]:
    """Each task's training loss on ``batch`` for a copy of ``model`` on ``device`` (train mode,
    autocast as the engine runs it); ``model`` itself is left where it is."""
    moved = copy.deepcopy(model).to(device).train()
    with autocast(device, precision):  # type: ignore[arg-type]
        losses = compute_losses(moved, tasks, batch.to(device))
    return {name: float(parts["loss"].float()) for name, parts in losses.items()}


def relative_difference(first: float, second: float) -> float:
    return abs(first - second) / max(abs(first), abs(second), 1e-12)


def all_finite(values: Mapping[str, float]) -> bool:
    return all(math.isfinite(value) for value in values.values())


def tiny_teachers(root: Path) -> dict[str, Path]:
    """One random-weight teacher per MuST task (the labeler tests' teachers)."""
    return {task: make_teacher(root / task, task, **options) for task, options in TEACHER_OPTIONS.items()}


def label_on(images: DatasetConfig, teacher_dirs: Mapping[str, Path], out: Path, device: str, precision: str,
             thresholds: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """``must label`` of ``images`` on ``device``; returns ``{key: {task: pseudo label}}`` read back
    from the shards."""
    config = LabelConfig(teachers=tuple(str(d) for d in teacher_dirs.values()), data=images, batch_size=8,
                         workers=0, images_per_shard=16, precision=precision,  # type: ignore[arg-type]
                         device=device, thresholds=dict(thresholds))
    label_dataset(config, out)
    counts = {entry.task: entry.num_classes for entry in read_manifest(out).teachers}
    return {key: decode_labels(entries, counts) for shard in sorted(out.glob("shard-*.tar"))
            for key, entries in iterate_shard(shard)}


def box_iou(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    from torchvision.ops import box_iou as iou

    return iou(first.float(), second.float())


def unmatched_boxes(reference: Mapping[str, torch.Tensor], other: Mapping[str, torch.Tensor],
                    min_score: float, min_iou: float) -> int:
    """How many of ``reference``'s boxes scoring at least ``min_score`` have no box of the same
    class in ``other`` with IoU >= ``min_iou`` (boxes near the threshold may fall on either side)."""
    keep = reference["scores"] >= min_score
    boxes, labels = reference["boxes"][keep], reference["labels"][keep]
    if len(boxes) == 0:
        return 0
    if len(other["boxes"]) == 0:
        return len(boxes)
    overlap = box_iou(boxes, other["boxes"])
    same_class = labels[:, None] == other["labels"][None, :]
    return int((~((overlap >= min_iou) & same_class).any(dim=1)).sum())


def open_set(config: DatasetConfig) -> ReaderDataset:
    return open_dataset(config)
