"""One loader for every trained model of ours: a teacher, a student, a transfer cell, or any of
their ``checkpoint.pt`` files, rebuilt from its record and weights (MuST sec. 3.1 teachers,
sec. 3.3 student, sec. 3.5 transfer).

Which record a directory holds decides what is built:

* ``teacher.json`` (``must teach``, and a student's ``as_teacher/<task>/``): one task with its
  options, the model config, the image size, and the checkpoint path relative to the record;
* ``student.json`` (``must train``): every task with its options; tasks that are not in
  :data:`must.tasks.TASK_BUILDERS` (self-supervised pretext heads) are left out and listed;
* ``cell.json`` (a ``must transfer`` grid cell): the downstream task and its options; a class
  count the record lacks (it came from the data) is read from the head's weights.

The model is built without initial weights (the checkpoint replaces them); every built head must
be in the checkpoint with the record's shapes, otherwise loading fails naming what is missing,
never a silently random head.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from must import config as config_lib
from must.config import ConfigError
from must.files import CHECKPOINT_NAME, file_sha256
from must.models.config import ModelConfig
from must.models.multitask import MultiTaskModel, build_model
from must.models.records import (STUDENT_RECORD, TEACHER_RECORD, StudentRecord, TeacherRecord, parse_record,
                                 read_json_object)
from must.models.weights import CheckpointError, load_checkpoint, read_state_dict
from must.tasks import TASK_BUILDERS, Task, build_task

RECORDS: tuple[tuple[str, str], ...] = ((TEACHER_RECORD, "teacher"), (STUDENT_RECORD, "student"),
                                        ("cell.json", "transfer"))
"""(record file, kind) in the order a directory is searched."""
RecordKind = Literal["teacher", "student", "transfer"]
CLASS_OUTPUTS: dict[str, tuple[str, int]] = {
    "classification": ("heads.classification.linear.weight", 0),
    "segmentation": ("heads.segmentation.predictor.weight", 0),
    "detection": ("heads.detection.roi_heads.box_predictor.cls_score.weight", 1),
}
"""Task -> (the weight whose first dimension counts the outputs, outputs that are not classes:
the detector's background). Reads a class count a transfer cell's record does not hold."""


@dataclass
class LoadedModel:
    """A rebuilt model in eval mode with its tasks and what it was rebuilt from."""

    model: MultiTaskModel
    tasks: dict[str, Task]
    image_size: int
    """The side of the square window the model was trained at."""
    checkpoint: Path
    config: ModelConfig
    left_out: list[str] = field(default_factory=list)
    """Tasks of the record that were not built (self-supervised pretext heads)."""
    kind: RecordKind = "student"
    directory: Path = Path(".")
    record: dict[str, Any] = field(default_factory=dict)
    """The record file's contents, as read."""

    @property
    def class_names(self) -> dict[str, list[str]]:
        """Task -> class names, for the tasks that have classes (numbered when the record has
        no names)."""
        names = {}
        for name, task in self.tasks.items():
            count = getattr(task, "num_classes", None)
            if count is not None:
                given = getattr(task, "class_names", None)
                names[name] = list(given) if given is not None else [str(i) for i in range(count)]
        return names

    def checkpoint_sha256(self) -> str:
        return file_sha256(self.checkpoint)


@dataclass(frozen=True)
class Trained:
    """How a model was trained, as far as its record says (``None``: not recorded)."""

    steps: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    """Validation metrics: metric -> value (a teacher), task -> metric -> value (a student)."""


@dataclass(frozen=True)
class ModelRecord:
    """What any of the three records says about the model to rebuild."""

    kind: RecordKind
    path: Path
    tasks: dict[str, dict[str, Any]]
    model: ModelConfig
    image_size: int
    checkpoint: Path
    data: dict[str, Any]
    trained: Trained = field(default_factory=Trained)


def load_model(path: str | Path, device: torch.device | str = "cpu",
               tasks: Sequence[str] | None = None) -> LoadedModel:
    """Rebuilds the model of a teacher / student / transfer-cell directory, or of a
    ``checkpoint.pt`` inside one, in eval mode on ``device``. ``tasks`` keeps a subset of the
    record's tasks (an unknown name is a :class:`~must.config.ConfigError`)."""
    record = read_model_record(path)
    state: dict[str, Tensor] | None = None
    options = dict(record.tasks)
    for name, task_options in options.items():
        if name in CLASS_OUTPUTS and "num_classes" not in task_options:
            state = state if state is not None else read_state_dict(record.checkpoint)[1]
            options[name] = {**task_options, "num_classes": _class_count(name, task_options, state,
                                                                         record.checkpoint)}
    built = {name: build_task(name, **opts) for name, opts in options.items() if name in TASK_BUILDERS}
    left_out = [name for name in options if name not in TASK_BUILDERS]
    if tasks is not None:
        unknown = [name for name in tasks if name not in built]
        if unknown:
            raise ConfigError(f"{record.path}: no task(s) {unknown} in this model; its tasks: "
                              f"{', '.join(built)}")
        built = {name: built[name] for name in tasks}
    if not built:
        raise CheckpointError(f"{record.path}: none of its tasks {list(options)} can be built "
                              f"(known tasks: {', '.join(TASK_BUILDERS)})")
    model = _load_weights(record.model, built, record.checkpoint, device)
    return LoadedModel(model, built, record.image_size, record.checkpoint, record.model, left_out,
                       record.kind, record.path.parent, record.data)


def read_model_record(path: str | Path) -> ModelRecord:
    """The record beside ``path`` (a model directory, or a checkpoint file in one)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model {path} not found (a model directory of `must teach`, "
                                f"`must train` or `must transfer`, or its {CHECKPOINT_NAME})")
    directory, checkpoint = (path.parent, path) if path.is_file() else (path, None)
    for name, kind in RECORDS:
        if (directory / name).is_file():
            data = read_json_object(directory / name)
            parsed = _PARSERS[kind](data, directory / name)
            return config_lib.replace(parsed, checkpoint=checkpoint or parsed.checkpoint)
    raise CheckpointError(f"{directory}: no model record ({', '.join(name for name, _ in RECORDS)}); "
                          f"is it a `must teach`, `must train` or `must transfer` output?")


def _teacher(data: dict[str, Any], path: Path) -> ModelRecord:
    teacher = parse_record(TeacherRecord, data, path)
    if not teacher.task:
        raise CheckpointError(f"{path}: no 'task' in the record")
    # The recipe as far as the file states it: the record's defaults would be made-up numbers.
    recipe = {key: getattr(teacher, key) for key in ("steps", "batch_size", "learning_rate") if key in data}
    return ModelRecord("teacher", path, {teacher.task: dict(teacher.task_options)},
                       config_lib.replace(teacher.model, init=None), teacher.image_size,
                       (path.parent / teacher.checkpoint).resolve(), data,
                       Trained(**recipe, metrics=teacher.metrics))


def _student(data: dict[str, Any], path: Path) -> ModelRecord:
    student = parse_record(StudentRecord, data, path)
    if not student.tasks:
        raise CheckpointError(f"{path}: no 'tasks' in the record")
    trained = Trained(student.steps, student.batch_size, student.learning_rate, student.metrics)
    return ModelRecord("student", path, dict(student.tasks), config_lib.replace(student.model, init=None),
                       student.image_size, path.parent / CHECKPOINT_NAME, data, trained)


def _transfer(data: dict[str, Any], path: Path) -> ModelRecord:
    task = _require(data, "task", str, path)
    downstream = data.get("downstream") if isinstance(data.get("downstream"), Mapping) else {}
    options = dict(downstream.get("task_options") or {})
    return ModelRecord("transfer", path, {task: options}, _model_config(data, path),
                       int(downstream.get("image_size", 64)), path.parent / CHECKPOINT_NAME, data,
                       Trained(steps=data.get("steps"), metrics=data.get("metrics") or {}))


_PARSERS = {"teacher": _teacher, "student": _student, "transfer": _transfer}


def _model_config(data: dict[str, Any], path: Path) -> ModelConfig:
    model = data.get("model") or {}
    if not isinstance(model, Mapping):
        raise CheckpointError(f"{path}: 'model' is not a mapping of model config keys")
    return config_lib.replace(config_lib.from_dict(ModelConfig, dict(model), "model"), init=None)


def _require(data: dict[str, Any], key: str, kind: type | Any, path: Path) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or not value:
        raise CheckpointError(f"{path}: no '{key}' in the record")
    return value


def _class_count(task: str, options: dict[str, Any], state: dict[str, Tensor], checkpoint: Path) -> int:
    key, extra = CLASS_OUTPUTS[task]
    if key not in state:
        raise CheckpointError(f"{checkpoint}: no '{key}', so its {task} class count is unknown")
    extra += int(bool(options.get("background_class")))
    return int(state[key].shape[0]) - extra


def _load_weights(config: ModelConfig, tasks: dict[str, Task], checkpoint: Path,
                  device: torch.device | str) -> MultiTaskModel:
    """Backbone, FPN and every head of ``tasks`` from ``checkpoint``; a head the checkpoint lacks
    or holds with other shapes (another task, another class count) is an error. Heads of other
    tasks in the checkpoint are fine: a student can serve a single task."""
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: checkpoint not found")
    model = build_model(config, tasks)
    report = load_checkpoint(model, checkpoint, heads=True)
    heads = tuple(f"heads.{name}." for name in tasks)
    unloaded = [name for name in tasks if not any(key.startswith(f"heads.{name}.") for key in report.loaded)]
    problems = report.missing + [entry for entry in report.skipped if entry.startswith(heads)]
    if problems or unloaded:
        raise CheckpointError(f"{checkpoint}: does not hold the trained model its record describes "
                              f"(wrong task or class count?): "
                              f"{'; '.join((problems or [f'no {n} head' for n in unloaded])[:5])}")
    return model.to(device).eval()
