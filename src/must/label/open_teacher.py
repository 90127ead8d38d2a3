"""Opening a teacher directory for labeling: ours (``teacher.json``, :mod:`must.label.teachers`)
or a torchvision / timm model (``adapter.json``, :mod:`must.label.adapters`)."""

from __future__ import annotations

from pathlib import Path

import torch

from must.label.adapters import load_adapter
from must.label.shards import CODECS
from must.label.teachers import ADAPTER_NAME, RECORD_NAME, LabelingTeacher, TeacherError, load_model_teacher


def load_labeling_teacher(spec: str | Path, device: torch.device,
                          input_size: int | None = None) -> LabelingTeacher:
    """A teacher from a directory: ours (``teacher.json``) or an adapter (``adapter.json``).

    ``spec`` may be ``TASK=DIR`` to state which task the teacher must be for: a directory holding
    a teacher of another task is then an error rather than labels under the wrong name.
    """
    expected, directory = parse_teacher_spec(spec)
    if (directory / RECORD_NAME).is_file():
        teacher: LabelingTeacher = load_model_teacher(directory, device)
    elif (directory / ADAPTER_NAME).is_file():
        teacher = load_adapter(directory, device)
    elif not directory.is_dir():
        raise FileNotFoundError(f"teacher directory {directory} not found")
    else:
        raise TeacherError(f"teacher {directory}: neither {RECORD_NAME} (a `must teach` output) "
                           f"nor {ADAPTER_NAME} (a torchvision / timm model) found")
    if expected is not None and teacher.task.name != expected:
        raise TeacherError(f"teacher {directory} is a '{teacher.task.name}' teacher, "
                           f"not '{expected}' as asked")
    if input_size is not None:
        teacher.input_size = input_size
    check_supported(teacher)
    return teacher


def parse_teacher_spec(spec: str | Path) -> tuple[str | None, Path]:
    text = str(spec)
    task, separator, rest = text.partition("=")
    if separator and task in CODECS:
        return task, Path(rest)
    return None, Path(text)


def check_supported(teacher: LabelingTeacher) -> None:
    if teacher.task.name not in CODECS:
        raise TeacherError(f"teacher '{teacher.name}': task '{teacher.task.name}' cannot be "
                           f"pseudo-labeled; tasks with a label format: {', '.join(CODECS)}")
    if teacher.input_size < 1:
        raise TeacherError(f"teacher '{teacher.name}': input size must be positive, got "
                           f"{teacher.input_size}")
