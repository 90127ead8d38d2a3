"""The trained student (and a transferred model) loaded back for drawing (MuST Figure 4).

Mirrors :func:`must.label.teachers.load_model_teacher`: a record says which tasks with which options and which
model config, the checkpoint holds the weights; the model is rebuilt, loaded and put in eval mode.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from must import config as config_lib
from must.files import CHECKPOINT_NAME
from must.models import CheckpointError, ModelConfig, MultiTaskModel, build_model, load_checkpoint
from must.tasks import TASK_BUILDERS, Task, build_task

STUDENT_RECORD = "student.json"
TRANSFER_RECORDS = ("cell.json", "transfer.json", "model.json", "record.json", "best.json")
"""Files in a transfer directory that may say which model config and task options it used."""


@dataclass
class LoadedModel:
    model: MultiTaskModel
    tasks: dict[str, Task]
    image_size: int
    checkpoint: Path
    config: ModelConfig
    left_out: list[str] = field(default_factory=list)
    """Tasks of the record that are not drawable tasks (e.g. self-supervised pretext heads)."""


def load_student(directory: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuilds the student from ``<directory>/student.json`` and ``checkpoint.pt``, in eval mode.

    ``student.json`` (written by ``must train``) must hold::

        {"tasks": {"<task name>": {<constructor options of the task>}, ...},
         "model": {<ModelConfig fields: "backbone", "width", "fpn_channels", "norm", ...>},
         "image_size": <int, the side images were trained at>}

    Other keys (``"metrics"``, batch size, ...) are ignored here. Tasks not in
    :data:`must.tasks.TASK_BUILDERS` (self-supervised heads) are not built: their heads in the
    checkpoint are skipped and listed in ``left_out``. Every built head must be in the checkpoint.
    """
    directory = Path(directory)
    record = _read_record(directory / STUDENT_RECORD)
    options = record.get("tasks")
    if not isinstance(options, Mapping) or not options:
        raise ValueError(f"{directory / STUDENT_RECORD}: no 'tasks' mapping (task name -> options)")
    tasks = {name: build_task(name, **dict(opts or {})) for name, opts in options.items()
             if name in TASK_BUILDERS}
    config = config_lib.from_dict(ModelConfig, record.get("model") or {}, "model")
    model = _load(config, tasks, directory / CHECKPOINT_NAME, device)
    left_out = [name for name in options if name not in TASK_BUILDERS]
    return LoadedModel(model, tasks, int(record.get("image_size", 64)), directory / CHECKPOINT_NAME,
                       config, left_out)


def load_transfer_model(directory: str | Path, task_name: str, fallback: ModelConfig,
                        device: torch.device | str = "cpu") -> LoadedModel:
    """A model fine-tuned on one downstream task (MuST sec. 3.5), e.g. ``transfer/must/normals``.

    The model config and task options come from the first of :data:`TRANSFER_RECORDS` in
    ``directory`` that has a ``"model"`` mapping (options from its ``"task_options"`` or
    ``"tasks"[task_name]``); without one, ``fallback`` (the student's config: transfer keeps the
    pre-trained backbone) and the task's default options are used.
    """
    directory = Path(directory)
    config, options = fallback, {}
    for name in TRANSFER_RECORDS:
        record = _read_optional(directory / name)
        if isinstance(record, Mapping) and isinstance(record.get("model"), Mapping):
            config = config_lib.from_dict(ModelConfig, record["model"], "model")
            tasks_options = record.get("tasks") if isinstance(record.get("tasks"), Mapping) else {}
            downstream = record.get("downstream") if isinstance(record.get("downstream"), Mapping) else {}
            options = dict(record.get("task_options") or tasks_options.get(task_name)
                           or downstream.get("task_options") or {})
            break
    tasks = {task_name: build_task(task_name, **options)}
    model = _load(config, tasks, directory / CHECKPOINT_NAME, device)
    return LoadedModel(model, tasks, 0, directory / CHECKPOINT_NAME, config)


def _load(config: ModelConfig, tasks: dict[str, Task], checkpoint: Path,
          device: torch.device | str) -> MultiTaskModel:
    """Builds the model without its initial weights (the checkpoint replaces them) and loads
    backbone, FPN and every head; anything the checkpoint lacks is an error, not a silent
    random head in a picture."""
    model = build_model(config_lib.replace(config, init=None), tasks)
    report = load_checkpoint(model, checkpoint, heads=True)
    unloaded = [f"heads.{name}" for name in tasks
                if not any(key.startswith(f"heads.{name}.") for key in report.loaded)]
    problems = report.missing + [entry for entry in report.skipped if entry.startswith(tuple(unloaded))]
    if problems or unloaded:
        raise CheckpointError(f"{checkpoint}: does not fit the model: "
                              f"{'; '.join((problems or unloaded)[:5])}")
    return model.to(device).eval()


def _read_record(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no student record (is {path.parent} a `must train` output?)")
    record = _read_optional(path)
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a JSON object")
    return record


def _read_optional(path: Path) -> Any:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from None
