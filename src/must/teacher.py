"""A trained single-task teacher on disk, and loading it back (MuST sec. 3.1).

``must teach`` writes ``<dir>/checkpoint.pt`` (the engine's checkpoint: ``{"model": state dict,
...}``) and ``<dir>/teacher.json`` (a :class:`TeacherRecord`): which task with which options, the
model config, the image size, and the batch size and learning rate the teacher was trained with,
which the MuST loss rule needs later (sec. 3.3: w_i = b_s lr_it / (b_it lr_s)).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from must import config as config_lib
from must.models import ModelConfig, MultiTaskModel, build_model, load_checkpoint
from must.tasks import Task, build_task

RECORD_NAME = "teacher.json"
CHECKPOINT_NAME = "checkpoint.pt"


@dataclass(frozen=True)
class TeacherRecord:
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


@dataclass
class Teacher:
    model: MultiTaskModel
    task: Task
    record: TeacherRecord
    checkpoint: Path
    checkpoint_sha256: str


def save_record(record: TeacherRecord, directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    temporary = directory / (RECORD_NAME + ".tmp")
    temporary.write_text(json.dumps(config_lib.to_dict(record), indent=2))
    temporary.replace(directory / RECORD_NAME)


def read_record(directory: Path) -> TeacherRecord:
    path = Path(directory) / RECORD_NAME
    if not path.exists():
        raise FileNotFoundError(f"{path}: no teacher record (is {directory} a `must teach` output?)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
    return config_lib.from_dict(TeacherRecord, data)


def build_task_from_record(record: TeacherRecord) -> Task:
    return build_task(record.task, **record.task_options)


def load_teacher(directory: str | Path, device: torch.device | str = "cpu") -> Teacher:
    """Rebuilds a teacher's model and task from its directory, in eval mode on ``device``."""
    directory = Path(directory)
    record = read_record(directory)
    task = build_task_from_record(record)
    model = build_model(config_lib.replace(record.model, init=None), {task.name: task})
    checkpoint = (directory / record.checkpoint).resolve()
    report = load_checkpoint(model, checkpoint, heads=True)
    head_keys = [key for key in model.state_dict() if key.startswith("heads.")]
    if not set(head_keys) <= set(report.loaded):
        raise ValueError(f"{checkpoint}: has no '{task.name}' head of the shapes {directory / RECORD_NAME} describes")
    model.to(device).eval()
    return Teacher(model, task, record, checkpoint, file_sha256(checkpoint))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
