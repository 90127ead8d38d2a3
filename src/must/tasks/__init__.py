"""Every task behind the :class:`~must.tasks.base.Task` interface, picked by name from one explicit
dict (STYLE.md, practice 3): adding a task touches its own file and :data:`TASK_BUILDERS`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from must.tasks.base import Task, require_known
from must.tasks.classification import ClassificationTask
from must.tasks.depth import DepthTask
from must.tasks.detection import DetectionTask
from must.tasks.normals import NormalsTask
from must.tasks.segmentation import SegmentationTask

TASK_BUILDERS: dict[str, Callable[..., Task]] = {
    "classification": ClassificationTask,
    "detection": DetectionTask,
    "segmentation": SegmentationTask,
    "depth": DepthTask,
    "normals": NormalsTask,
}


def build_task(name: str, **options: Any) -> Task:
    """``build_task("segmentation", num_classes=21)``; an unknown name fails listing the known ones."""
    builder: Callable[..., Task] = require_known(name, TASK_BUILDERS, "task")
    return builder(**options)


__all__ = ["TASK_BUILDERS", "ClassificationTask", "DepthTask", "DetectionTask", "NormalsTask",
           "SegmentationTask", "Task", "build_task"]
