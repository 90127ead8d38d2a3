"""The records written beside a trained model's ``checkpoint.pt``, as typed dataclasses: what
``must teach`` left in ``teacher.json`` (a single-task teacher, MuST sec. 3.1), ``must train`` in
``student.json`` (the multi-task student, MuST sec. 3.3) and ``must pretrain`` in
``pretrain.json`` (a self-supervised trunk).

Each record is written as JSON with :func:`write_record` (atomically) and read back with its
``read_*`` function; a file that is not valid JSON or does not fit the record is a
:class:`~must.models.weights.CheckpointError` naming the file, a missing one a
``FileNotFoundError`` naming it. Every field but a teacher's ``task`` has a default, so a record
with fewer keys (an older or hand-written one) still reads; a key the record does not know is an
error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from must import config as config_lib
from must.config import ConfigError
from must.files import CHECKPOINT_NAME, write_atomic
from must.models.config import ModelConfig
from must.models.weights import CheckpointError

TEACHER_RECORD = "teacher.json"
STUDENT_RECORD = "student.json"
PRETRAIN_RECORD = "pretrain.json"


@dataclass(frozen=True)
class TeacherRecord:
    """``teacher.json`` beside a teacher's ``checkpoint.pt``: which task with which options, the
    model config, the image size, and the batch size and learning rate the teacher was trained
    with, which the MuST loss rule needs later (sec. 3.3: w_i = b_s lr_it / (b_it lr_s))."""

    FILE_NAME: ClassVar[str] = TEACHER_RECORD

    task: str
    task_options: dict[str, Any] = field(default_factory=dict)
    """Constructor options of the task (e.g. ``num_classes``, ``class_names``)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    image_size: int = 64
    batch_size: int = 32
    learning_rate: float = 0.1
    steps: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    """The teacher's validation metrics."""
    checkpoint: str = CHECKPOINT_NAME
    """The weights, relative to the record's directory: a student exports one record per task
    that all point at its one multi-task checkpoint (Noisy Student: the student labels next)."""


@dataclass(frozen=True)
class StudentRecord:
    """``student.json``: the student's tasks with their constructor options (self-supervised
    heads too), its model, the image size, its recipe and its validation metrics per task."""

    FILE_NAME: ClassVar[str] = STUDENT_RECORD

    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    image_size: int = 64
    batch_size: int | None = None
    learning_rate: float | None = None
    steps: int | None = None
    """The recipe; None where a (hand-written) file does not say, so a model card shows it as
    unknown rather than a made-up default."""
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    """Task -> metric -> value on the task's validation set (empty without validation sets)."""


@dataclass(frozen=True)
class PretrainRecord:
    """``pretrain.json``: the self-supervised method, its pretext tasks (as each describes its
    options) and the options given, the schedule, lasso and harmonization of ``multi`` (Doersch &
    Zisserman 2017 sec. 3, 4.2, 4.3), the model, the recipe, and the last logged losses."""

    FILE_NAME: ClassVar[str] = PRETRAIN_RECORD

    method: str = ""
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    schedule: str = "alternate"
    lasso: float | None = None
    harmonize: bool = False
    model: ModelConfig = field(default_factory=ModelConfig)
    image_size: int = 64
    batch_size: int = 32
    learning_rate: float = 0.1
    steps: int = 0
    losses: dict[str, float] = field(default_factory=dict)
    checkpoint: str = CHECKPOINT_NAME
    """The weights, relative to the record's directory."""


Record = TypeVar("Record", TeacherRecord, StudentRecord, PretrainRecord)


def write_record(record: TeacherRecord | StudentRecord | PretrainRecord, directory: str | Path) -> Path:
    """Writes ``record`` as ``<directory>/<its file name>`` (atomically); returns the path."""
    path = Path(directory) / record.FILE_NAME
    write_atomic(path, json.dumps(config_lib.to_dict(record), indent=2))
    return path


def read_teacher_record(directory: str | Path) -> TeacherRecord:
    """``<directory>/teacher.json`` (a ``must teach`` output, or a student's ``as_teacher/<task>``)."""
    return _read(TeacherRecord, Path(directory), "must teach")


def read_student_record(directory: str | Path) -> StudentRecord:
    """``<directory>/student.json`` (a ``must train`` output)."""
    return _read(StudentRecord, Path(directory), "must train")


def read_pretrain_record(directory: str | Path) -> PretrainRecord:
    """``<directory>/pretrain.json`` (a ``must pretrain`` output)."""
    return _read(PretrainRecord, Path(directory), "must pretrain")


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; invalid JSON or another JSON value is a
    :class:`CheckpointError` naming the file."""
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return data


def parse_record(kind: type[Record], data: dict[str, Any], path: Path) -> Record:
    """``data`` (read from ``path``) as a ``kind``; a key or value that does not fit is a
    :class:`CheckpointError` naming ``path``."""
    try:
        return config_lib.from_dict(kind, data)
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error}") from None


def _read(kind: type[Record], directory: Path, verb: str) -> Record:
    path = directory / kind.FILE_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {path.stem} record (is {directory} a `{verb}` output?)")
    return parse_record(kind, read_json_object(path), path)
