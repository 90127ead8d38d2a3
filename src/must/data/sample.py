"""The one sample structure every reader returns and every stage consumes.

A :class:`Sample` is an image plus a target for each task it has labels for (ground truth or
pseudo label: both are treated the same, MuST sec. 3.4). Tasks it lacks are simply absent from
``targets``. Target conventions, by task name:

==================  ===========================================================================
``classification``  ``int64`` 0-d tensor (a hard label) or ``float32 [K]`` (soft probabilities)
``detection``       ``{"boxes": float32 [N, 4] xyxy pixels, "labels": int64 [N]}`` (+ ``"scores"``)
``segmentation``    ``int64 [H, W]`` class per pixel; :data:`IGNORE_INDEX` where unlabeled
``depth``           ``float32 [H, W]`` depth in meters (or relative depth for pseudo labels);
                    ``0`` where invalid
``normals``         ``float32 [3, H, W]`` unit vectors in the camera frame (OpenCV: x right,
                    y down, z forward); the zero vector where invalid
``instances``       ``int64 [H, W]`` instance id per pixel, ``0`` for stuff (world data only)
==================  ===========================================================================

Images are ``uint8 [3, H, W]`` tensors (RGB); batches carry ``float32`` in ``[0, 1]`` and the
model normalizes them itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

IGNORE_INDEX = 255
"""Segmentation label of pixels without a (confident) label; skipped by loss and metric."""


@dataclass
class Sample:
    key: str
    image: Tensor
    targets: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the image."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])


@dataclass
class TaskBatch:
    """The targets of one task for a batch. ``present[i]`` says whether image ``i`` has a target.

    ``value`` is a stacked tensor (dense and classification tasks: absent rows hold a neutral
    filler the loss never reads) or a list with one entry per image (detection: an empty box set
    for absent images).
    """

    present: Tensor
    value: Any

    def to(self, device: torch.device) -> TaskBatch:
        return TaskBatch(self.present.to(device), _move(self.value, device))

    @property
    def count(self) -> int:
        return int(self.present.sum())


@dataclass
class Batch:
    keys: list[str]
    images: Tensor
    targets: dict[str, TaskBatch] = field(default_factory=dict)

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(
            self.keys,
            self.images.to(device, non_blocking=non_blocking),
            {name: target.to(device) for name, target in self.targets.items()},
        )

    def __len__(self) -> int:
        return len(self.keys)


def stack_with_fill(values: list[Tensor | None], fill: float, like: Tensor | None = None) -> TaskBatch:
    """Stacks per-image tensors of one shape, filling absent images with ``fill``."""
    reference = like if like is not None else next(v for v in values if v is not None)
    present = torch.tensor([v is not None for v in values], dtype=torch.bool)
    rows = [v if v is not None else torch.full_like(reference, fill) for v in values]
    return TaskBatch(present, torch.stack(rows))


def _move(value: Any, device: torch.device) -> Any:
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _move(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_move(v, device) for v in value]
    return value
