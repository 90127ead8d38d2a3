"""Every task behind the :class:`~must.tasks.base.Task` interface, picked by name from one explicit
dict per family: adding a task touches its own file and :data:`TASK_BUILDERS` (supervised) or
:data:`~must.tasks.self_supervised.SELF_SUPERVISED_TASKS` (pretext) or
:data:`~must.tasks.self_supervised.SEMI_SUPERVISED_TASKS` (semi-supervised).

Every stage builds its tasks here (:func:`build_task`, :func:`build_tasks`), so an option a task's
constructor does not take is refused in one place, naming the option and the valid ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from must.errors import ConfigError
from must.data.readers.reader_dataset import ReaderDataset
from must.tasks.base import Task, require_known
from must.tasks.classification import ClassificationTask
from must.tasks.depth import DepthTask
from must.tasks.detection import DetectionTask
from must.tasks.normals import NormalsTask
from must.tasks.segmentation import SegmentationTask
from must.tasks.self_supervised import SELF_SUPERVISED_TASKS, SEMI_SUPERVISED_TASKS, SelfSupervisedTask

TASK_BUILDERS: dict[str, Callable[..., Task]] = {
    "classification": ClassificationTask,
    "detection": DetectionTask,
    "segmentation": SegmentationTask,
    "depth": DepthTask,
    "normals": NormalsTask,
}


def pretext_builders() -> dict[str, Callable[..., SelfSupervisedTask]]:
    """The self-supervised methods that need nothing but images (a semi-supervised method wraps a
    labeled task)."""
    return dict(SELF_SUPERVISED_TASKS)


def semi_supervised_names() -> dict[str, tuple[str, str]]:
    """``{"<method>_<task>": (method, task)}``: each semi-supervised method (FixMatch, FlexMatch,
    ...) wraps the run's ``<task>`` and trains that task's head (Sohn et al. 2020 sec. 2.2)."""
    return {f"{method}_{task}": (method, task) for method in SEMI_SUPERVISED_TASKS for task in TASK_BUILDERS}


def task_option_names(builder: Callable[..., Task], wrapped: int = 0) -> list[str] | None:
    """The options ``builder``'s constructor takes by keyword, after its first ``wrapped``
    parameters (FixMatch's wrapped task); None when it takes any keyword (``**kwargs``)."""
    parameters = list(inspect.signature(builder).parameters.values())[wrapped:]
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters):
        return None
    keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [parameter.name for parameter in parameters if parameter.kind in keyword]


def check_options(name: str, builder: Callable[..., Task], options: Mapping[str, Any], wrapped: int = 0) -> None:
    """Refuses an option ``builder``'s constructor does not take, naming it and the valid ones (a
    typo would otherwise surface as a ``TypeError`` traceback, or only once training starts)."""
    valid = task_option_names(builder, wrapped)
    unknown = [option for option in options if valid is not None and option not in valid]
    if unknown:
        raise ConfigError(f"task '{name}' has no option {', '.join(map(repr, unknown))}; "
                          f"valid options: {', '.join(valid or [])}")


def check_task_options(name: str, options: Mapping[str, Any]) -> None:
    """:func:`check_options` for a supervised task, before its data is read (a stage refuses a bad
    option before anything is trained or written)."""
    check_options(name, require_known(name, TASK_BUILDERS, "task"), options)


def construct(name: str, builder: Callable[..., Task], options: Mapping[str, Any], *wrapped: Task) -> Task:
    """``builder(*wrapped, **options)`` with the options checked, and a refused value (the task's
    own :class:`ConfigError`) naming the task."""
    check_options(name, builder, options, len(wrapped))
    try:
        return builder(*wrapped, **options)
    except ConfigError as error:  # a value the task refuses, e.g. an unknown loss name
        raise ConfigError(f"task '{name}': {error}") from None


def build_task(name: str, /, **options: Any) -> Task:
    """``build_task("segmentation", num_classes=21)``; an unknown name fails listing the known
    ones, an unknown option listing the task's options."""
    builder: Callable[..., Task] = require_known(name, TASK_BUILDERS, "task")
    return construct(name, builder, options)


def build_tasks(options: Mapping[str, Mapping[str, Any]]) -> dict[str, Task]:
    """Supervised and self-supervised tasks from ``{name: constructor options}``: one student
    learns from any mix of label sources, ground truth, pseudo labels and pretext targets (MuST
    sec. 3.3 with the self-supervised tasks of Doersch & Zisserman 2017 beside them)."""
    tasks: dict[str, Task] = {}
    wrapped = semi_supervised_names()
    for name, opts in options.items():
        if name in TASK_BUILDERS:
            tasks[name] = build_task(name, **opts)
        elif name in pretext_builders():
            tasks[name] = construct(name, pretext_builders()[name], opts)
        elif name not in wrapped:
            known = [*TASK_BUILDERS, *pretext_builders(), *wrapped]
            raise ConfigError(f"unknown task '{name}'; choose one of: {', '.join(known)}")
    for name, opts in options.items():
        if name in wrapped:
            method, base = wrapped[name]
            if base not in tasks:
                raise ConfigError(f"task '{name}' wraps task '{base}', which the run lacks")
            tasks[name] = construct(name, SEMI_SUPERVISED_TASKS[method], opts, tasks[base])
    return {name: tasks[name] for name in options}


def task_options_from_data(task_name: str, dataset: ReaderDataset,
                           extra: Mapping[str, Any]) -> dict[str, Any]:
    """Class count and names for tasks that have classes, from the dataset; plus ``extra``."""
    options: dict[str, Any] = {}
    classes = dataset.classes.get(task_name)
    if classes:
        options.update(num_classes=len(classes), class_names=list(classes))
    options.update(extra)
    return options


__all__ = ["TASK_BUILDERS", "ClassificationTask", "DepthTask", "DetectionTask", "NormalsTask",
           "SegmentationTask", "Task", "build_task", "build_tasks", "check_options", "check_task_options",
           "construct", "pretext_builders", "semi_supervised_names", "task_option_names", "task_options_from_data"]
