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

Pixel heads (segmentation, depth, normals, colorization: heads that read fused P2) do not read C5;
:class:`PyramidLasso` gives each of them its own weights over the FPN levels P2..P7 that fused P2
sums (MuST sec. 3.3), ``fused_n = sum_l beta[n, l] * upsample(P_l)``, L1-penalized the same way.
``beta`` starts at 1, where the sum is today's fused P2 bit for bit. The levels are the shared
FPN's outputs, without a normalization of their own (that would change fused P2), so the L1 pull
on ``beta`` is balanced by the weight decay of the FPN's output convs rather than by a fixed scale.

The mixing weights themselves are exempt from weight decay (:meth:`LassoMixing.no_weight_decay`):
their only regularizer is the L1 penalty the paper puts on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LassoWeights(nn.Module):
    """A ``[tasks, units]`` matrix of learned weights, L1-penalized (Doersch & Zisserman sec. 4.2:
    each task's row selects the units it reads): what :class:`LassoMixing` and
    :class:`PyramidLasso` share. ``alpha`` starts at ``initial`` everywhere."""

    def __init__(self, task_names: Sequence[str], unit_names: Sequence[str], l1_weight: float,
                 initial: float) -> None:
        super().__init__()
        if len(set(task_names)) != len(task_names) or not task_names:
            raise ValueError(f"task names must be distinct and non-empty, got {list(task_names)}")
        if len(set(unit_names)) != len(unit_names) or not unit_names:
            raise ValueError(f"unit names must be distinct and non-empty, got {list(unit_names)}")
        if l1_weight < 0:
            raise ValueError(f"l1_weight must be non-negative, got {l1_weight}")
        self.task_names = list(task_names)
        self.unit_names = list(unit_names)
        self.l1_weight = l1_weight
        self.alpha = nn.Parameter(torch.full((len(task_names), len(unit_names)), float(initial)))

    def task_index(self, task: str) -> int:
        return row_index(self.task_names, task)

    def penalty(self) -> Tensor:
        """``l1_weight * sum |alpha|``: add it to the loss of every step."""
        return self.l1_weight * self.alpha.abs().sum()

    def task_penalty(self, task: str) -> Tensor:
        """``l1_weight * sum_m |alpha[task, m]|``: the L1 term of one task's row."""
        return self.l1_weight * self.alpha[self.task_index(task)].abs().sum()

    def no_weight_decay(self) -> set[str]:
        """``alpha``: regularized by its L1 penalty only (read by the optimizer's parameter groups)."""
        return {"alpha"}

    @property
    def matrix(self) -> Tensor:
        """The learned ``alpha``, ``[tasks, units]`` (rows :attr:`task_names`, columns
        :attr:`unit_names`), detached."""
        return self.alpha.detach().clone()


class LassoMixing(LassoWeights):
    """``forward(units, task) -> [N, width, h, w]``: the task's ``alpha``-weighted sum of units."""

    def __init__(self, task_names: Sequence[str], unit_channels: Sequence[int], width: int,
                 l1_weight: float = 1e-3, unit_names: Sequence[str] | None = None) -> None:
        names = list(unit_names) if unit_names is not None else [f"unit{i}" for i in range(len(unit_channels))]
        if len(names) != len(unit_channels):
            raise ValueError(f"{len(names)} unit names for {len(unit_channels)} units")
        # Start from the plain average of all units: dense, no unit preferred.
        super().__init__(task_names, names, l1_weight, initial=1.0 / max(len(unit_channels), 1))
        self.width = width
        self.projections = nn.ModuleList(nn.Conv2d(channels, width, 1, bias=False)
                                         for channels in unit_channels)

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


class PyramidLasso(LassoWeights):
    """Per pixel task, learned weights over the pyramid levels fused at P2 (Doersch & Zisserman
    sec. 4.2's per-task selection, applied to MuST sec. 3.3's fused P2).

    ``weights(task) -> {level: beta[task, level]}`` is what :meth:`Features.with_level_weights`
    fuses; ``beta`` (``alpha`` here) starts at 1, so an untrained lasso computes exactly the plain
    fused P2.
    """

    def __init__(self, task_names: Sequence[str], level_names: Sequence[str],
                 l1_weight: float = 1e-3) -> None:
        # 1, not 1 / levels: fused P2 is a plain sum (MuST sec. 3.3), and must stay so untrained.
        super().__init__(task_names, level_names, l1_weight, initial=1.0)

    def weights(self, task: str) -> dict[str, Tensor]:
        return dict(zip(self.unit_names, self.alpha[self.task_index(task)].unbind()))


def row_index(task_names: Sequence[str], task: str) -> int:
    if task not in task_names:
        raise KeyError(f"no lasso row for task '{task}'; rows: {', '.join(task_names)}")
    return list(task_names).index(task)


def lasso_rows(trunk: LassoMixing | None, pyramid: PyramidLasso | None) -> dict[str, dict[str, list[str]]]:
    """The row and column names of a model's lasso matrices, for its checkpoint record (the
    state dict holds tensors only)."""
    return {key: {"tasks": list(part.task_names), "units": list(part.unit_names)}
            for key, part in (("lasso", trunk), ("pyramid_lasso", pyramid)) if part is not None}


def read_lasso_matrix(state: Mapping[str, Any]) -> dict[str, Any] | None:
    """A checkpoint's learned lasso as one ``tasks x levels`` table (``{"tasks", "units",
    "alpha"}``): C2..C5 columns for the heads that read C5, P2..P7 for the pixel heads, NaN where
    a task has no weight; None without a lasso. ``state`` is a loaded checkpoint; names come from
    its ``model_record`` (older checkpoints: rows ``task0...``, columns ``c2..c5``)."""
    weights, rows = state.get("model", {}), state.get("model_record", {}).get("lasso_rows", {})
    parts = []
    for key, default_units in (("lasso", ("c2", "c3", "c4", "c5")), ("pyramid_lasso", ())):
        alpha = weights.get(f"{key}.alpha")
        if alpha is None:
            continue
        alpha = torch.as_tensor(alpha).float()
        names = rows.get(key, {})
        tasks = names.get("tasks") or [f"task{index}" for index in range(alpha.shape[0])]
        units = names.get("units") or list(default_units) or [f"level{i}" for i in range(alpha.shape[1])]
        parts.append((list(tasks), list(units), alpha))
    if not parts:
        return None
    tasks = [task for part in parts for task in part[0]]
    units = list(dict.fromkeys(unit for part in parts for unit in part[1]))
    table = torch.full((len(tasks), len(units)), float("nan"))
    first = 0
    for part_tasks, part_units, alpha in parts:
        columns = [units.index(unit) for unit in part_units]
        table[first:first + len(part_tasks), columns] = alpha
        first += len(part_tasks)
    return {"tasks": tasks, "units": units, "alpha": table.tolist()}
