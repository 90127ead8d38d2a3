"""The trained student (and a transferred model) loaded back for drawing (MuST Figure 4), through
the one model loader, :func:`must.models.loading.load_model`: a record says which tasks with
which options and which model config, the checkpoint holds the weights; every built head must
load from it, so a picture never shows a randomly initialized head.
"""

from __future__ import annotations

from pathlib import Path

import torch

from must.models.loading import LoadedModel, load_model
from must.models.records import STUDENT_RECORD

__all__ = ["STUDENT_RECORD", "LoadedModel", "load_student", "load_transfer_model"]


def load_student(directory: str | Path, device: torch.device | str = "cpu") -> LoadedModel:
    """The student of ``<directory>/student.json`` (written by ``must train``) and its
    ``checkpoint.pt``, in eval mode. Self-supervised pretext heads are not built: they are listed
    in ``left_out``."""
    directory = Path(directory)
    if not (directory / STUDENT_RECORD).is_file():
        raise FileNotFoundError(f"{directory / STUDENT_RECORD}: no student record "
                                f"(is {directory} a `must train` output?)")
    return load_model(directory, device)


def load_transfer_model(directory: str | Path, task_name: str,
                        device: torch.device | str = "cpu") -> LoadedModel:
    """The model of a ``must transfer`` grid cell fine-tuned on ``task_name`` (MuST sec. 3.5):
    its ``cell.json`` and ``checkpoint.pt``."""
    return load_model(directory, device, tasks=[task_name])
