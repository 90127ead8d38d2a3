"""Lasso layer selection (Doersch & Zisserman 2017, "Multi-task Self-Supervised Visual Learning",
sec. 4.2).

Each task head reads its own linear combination of the outputs of the trunk's residual units::

    input_n = sum_m alpha[n, m] * unit_m          (n: task, m: unit)

with an L1 penalty ``lambda * sum |alpha|`` added to the loss, which drives the combination to be
sparse: each task concentrates what it needs in a few units, so a new task can later select or
reject those groups of layers. One :class:`LassoMixing` serves the self-supervised tasks, another
(with its own matrix) the evaluation tasks (the paper's "lasso on the evaluation tasks").

The paper mixes the 23 units of ResNet-101's block 3, which all share one shape. This module takes
*any* list of unit outputs: by default the trunk stages C2..C5 (``Features.stages``), each
projected to a common width by a 1x1 conv and resized to a common size (the last unit's), or the
real residual units from :meth:`must.models.backbone.ResNetBackbone.forward_with_blocks`. Every
projected unit is normalized without learned scale (GroupNorm, one group, no affine): otherwise a
projection could grow while its ``alpha`` shrinks, and the L1 penalty would bind nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LassoMixing(nn.Module):
    """``forward(units, task) -> [N, width, h, w]``: the task's ``alpha``-weighted sum of units."""

    def __init__(self, task_names: Sequence[str], unit_channels: Sequence[int], width: int,
                 l1_weight: float = 1e-3, unit_names: Sequence[str] | None = None) -> None:
        super().__init__()
        if len(set(task_names)) != len(task_names) or not task_names:
            raise ValueError(f"task names must be distinct and non-empty, got {list(task_names)}")
        if l1_weight < 0:
            raise ValueError(f"l1_weight must be non-negative, got {l1_weight}")
        self.task_names = list(task_names)
        default_names = [f"unit{index}" for index in range(len(unit_channels))]
        self.unit_names = list(unit_names) if unit_names is not None else default_names
        if len(self.unit_names) != len(unit_channels):
            raise ValueError(f"{len(self.unit_names)} unit names for {len(unit_channels)} units")
        self.width = width
        self.l1_weight = l1_weight
        self.projections = nn.ModuleList(nn.Conv2d(channels, width, 1, bias=False)
                                         for channels in unit_channels)
        # Start from the plain average of all units: dense, no unit preferred.
        self.alpha = nn.Parameter(torch.full((len(task_names), len(unit_channels)), 1.0 / len(unit_channels)))

    def forward(self, units: Sequence[Tensor], task: str, size: tuple[int, int] | None = None) -> Tensor:
        if len(units) != len(self.projections):
            raise ValueError(f"expected {len(self.projections)} unit outputs, got {len(units)}")
        row = self.alpha[self.task_index(task)]
        size = size or (int(units[-1].shape[-2]), int(units[-1].shape[-1]))
        mixed = None
        for weight, projection, unit in zip(row, self.projections, units):
            projected = F.group_norm(projection(unit), 1)
            if tuple(projected.shape[-2:]) != tuple(size):
                projected = F.interpolate(projected, size=size, mode="bilinear", align_corners=False)
            mixed = weight * projected if mixed is None else mixed + weight * projected
        assert mixed is not None
        return mixed

    def task_index(self, task: str) -> int:
        if task not in self.task_names:
            raise KeyError(f"no lasso row for task '{task}'; rows: {', '.join(self.task_names)}")
        return self.task_names.index(task)

    def penalty(self) -> Tensor:
        """``l1_weight * sum |alpha|``: add it to the loss of every step."""
        return self.l1_weight * self.alpha.abs().sum()

    @property
    def matrix(self) -> Tensor:
        """The learned ``alpha``, ``[tasks, units]`` (rows :attr:`task_names`, columns
        :attr:`unit_names`), detached."""
        return self.alpha.detach().clone()
