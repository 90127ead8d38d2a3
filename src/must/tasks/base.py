"""The pivot of the design: everything task-specific lives behind :class:`Task`.

One file per task (classification, detection, segmentation, depth, normals, and every
self-supervised pretext task) implements this interface, in the same words each time:

* ``build_head``          the head on the shared ResNet-FPN features;
* ``loss``                ``{"loss": total, <parts>...}``, skipping images that lack a target;
* ``predict``             raw head output -> one prediction per image;
* ``to_pseudo_label``     one prediction -> a training target (MuST sec. 3.2 rules);
* ``metric``              an accumulating metric (``update`` / ``compute``);
* ``draw``                one prediction drawn on its image (paper Figure 4);
* ``transform_target``    the target under the joint geometric augmentation;
* ``collate``             per-image targets -> a :class:`~must.data.sample.TaskBatch`.

Heads are called as ``head(features, target)``: ``features`` is a
:class:`~must.models.features.Features` (C5, the pyramid, fused P2), ``target`` the task's
:class:`TaskBatch` when training (only detection reads it: torchvision's RPN and RoI heads compute
their losses inside ``forward``) or ``None``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from torch import Tensor, nn

from must.data.geometry import Geometry
from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.models.features import FeatureSpec


class TaskMetric(Protocol):
    """Accumulates over batches; ``compute`` returns named floats (higher is better unless the
    name says otherwise, e.g. ``abs_rel``, ``rmse``, ``mean_angle``)."""

    def update(self, output: Any, target: TaskBatch) -> None: ...

    def compute(self) -> dict[str, float]: ...

    def reset(self) -> None: ...


class Task(ABC):
    name: str
    """Key of this task's head, targets and losses (e.g. ``"segmentation"``)."""
    primary_metric: str
    """The ``compute()`` key reported in tables (higher is better), e.g. ``"miou"``."""
    makes_views: bool = False
    """Whether the task makes its own targets from the image (self-supervised: the model runs it on
    its views, not on the batch images)."""

    @abstractmethod
    def build_head(self, spec: FeatureSpec) -> nn.Module: ...

    @abstractmethod
    def loss(self, output: Any, target: TaskBatch) -> dict[str, Tensor]: ...

    @abstractmethod
    def predict(self, output: Any) -> list[Any]: ...

    @abstractmethod
    def to_pseudo_label(self, prediction: Any, threshold: float | None = None) -> Any: ...

    @abstractmethod
    def metric(self) -> TaskMetric: ...

    @abstractmethod
    def draw(self, image: np.ndarray, prediction: Any) -> np.ndarray: ...

    @abstractmethod
    def transform_target(self, target: Any, geometry: Geometry) -> Any: ...

    @abstractmethod
    def collate(self, targets: list[Any | None]) -> TaskBatch: ...

    def describe(self) -> dict[str, Any]:
        """What a checkpoint records to check compatibility (e.g. class count and names)."""
        return {"name": self.name}


def by_name(tasks: list[Task]) -> dict[str, Task]:
    """Tasks keyed by name; a duplicate name is an error."""
    result: dict[str, Task] = {}
    for task in tasks:
        if task.name in result:
            raise ValueError(f"task '{task.name}' given twice")  # callers build tasks from a dict: a bug
        result[task.name] = task
    return result


def require_known(name: str, known: Mapping[str, Any], what: str) -> Any:
    """Looks ``name`` up in an explicit family dict; an unknown name (a user's choice in a config
    or on the command line) is a :class:`ConfigError` listing the valid ones."""
    if name not in known:
        raise ConfigError(f"unknown {what} '{name}'; choose one of: {', '.join(sorted(known))}")
    return known[name]
