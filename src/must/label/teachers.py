"""What the labeler runs: a teacher of one task, whatever made it (MuST sec. 3.1: "a teacher may
also be a model the user already has").

Every teacher is a :class:`LabelingTeacher`: a task, a square input size, and
``predict(images float [B, 3, S, S] in [0, 1]) -> one prediction per image`` in the task's
prediction convention (what ``Task.predict`` returns: class probabilities ``[K]``, a detection
dict with boxes in input pixels, segmentation probabilities ``[C, S, S]``, depth ``[S, S]``), so
``task.to_pseudo_label`` turns each into a label by the paper's rules (sec. 3.2).

* :class:`ModelTeacher`: one of ours (a ``must teach`` directory: checkpoint.pt + teacher.json,
  a :class:`TeacherRecord`);
* adapters for torchvision and timm models (:mod:`must.label.adapters`, an ``adapter.json``);
* :class:`CallableTeacher`: any Python function, the documented escape hatch::

      teacher = CallableTeacher(ClassificationTask(3), lambda images: [...], name="mine")
      label_dataset(config, out, extra_teachers=[teacher])
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from must import config as config_lib
from must.errors import CheckpointError, TeacherError
from must.label.manifest import TeacherEntry
from must.models import MultiTaskModel
from must.models.loading import load_model
# teacher.json is one of the model records (one reader for all three); the stages import it from here.
from must.models.records import TEACHER_RECORD as RECORD_NAME
from must.models.records import TeacherRecord
from must.models.records import read_teacher_record as read_record
from must.models.records import write_record as save_record  # noqa: F401 (re-exported)
from must.tasks import Task

@dataclass
class Teacher:
    """A teacher rebuilt from its directory (:func:`load_model_teacher`)."""

    model: MultiTaskModel
    task: Task
    record: TeacherRecord
    checkpoint: Path
    checkpoint_sha256: str


ADAPTER_NAME = "adapter.json"


class LabelingTeacher(ABC):
    name: str
    task: Task
    input_size: int
    """Images are fitted into an ``input_size`` x ``input_size`` square before :meth:`predict`
    (aspect ratio kept, padded below or to the right: ``Geometry.fit``)."""

    @abstractmethod
    def predict(self, images: Tensor) -> list[Any]:
        """``float [B, 3, S, S]`` in ``[0, 1]`` on the teacher's device -> B predictions."""

    @abstractmethod
    def entry(self) -> TeacherEntry:
        """How the manifest names this teacher (without the threshold: the labeler adds it)."""

    def to(self, device: torch.device) -> LabelingTeacher:
        return self

    @property
    def class_names(self) -> list[str] | None:
        return getattr(self.task, "class_names", None)

    @property
    def num_classes(self) -> int | None:
        return getattr(self.task, "num_classes", None)


def task_options(task: Task) -> dict[str, Any]:
    """Constructor options that rebuild a class-based task (what the student needs)."""
    options: dict[str, Any] = {}
    if getattr(task, "num_classes", None) is not None:
        options["num_classes"] = task.num_classes  # type: ignore[attr-defined]
    if getattr(task, "class_names", None) is not None:
        options["class_names"] = list(task.class_names)  # type: ignore[attr-defined]
    return options


class ModelTeacher(LabelingTeacher):
    """One of ours: a :class:`Teacher` (model with one head, in eval mode)."""

    def __init__(self, teacher: Teacher, directory: Path, input_size: int | None = None) -> None:
        self.teacher = teacher
        self.task = teacher.task
        self.name = Path(directory).name or teacher.task.name
        self.directory = Path(directory)
        self.input_size = input_size or teacher.record.image_size

    def predict(self, images: Tensor) -> list[Any]:
        output = self.teacher.model(images, tasks=[self.task.name])[self.task.name]
        return self.task.predict(output)

    def to(self, device: torch.device) -> ModelTeacher:
        self.teacher.model.to(device)
        return self

    def entry(self) -> TeacherEntry:
        record = self.teacher.record
        return TeacherEntry(
            name=self.name, task=self.task.name, kind="must", input_size=self.input_size,
            checkpoint=str(self.teacher.checkpoint), checkpoint_sha256=self.teacher.checkpoint_sha256,
            class_names=self.class_names, num_classes=self.num_classes,
            task_options=dict(record.task_options), batch_size=record.batch_size,
            learning_rate=record.learning_rate,
            details={"directory": str(self.directory), "model": config_lib.to_dict(record.model),
                     "trained_image_size": record.image_size, "metrics": dict(record.metrics)})


def load_model_teacher(directory: Path, device: torch.device) -> ModelTeacher:
    """Rebuilds the teacher in ``directory`` through the one model loader
    (:func:`must.models.loading.load_model`: model and task from its record, weights from its
    checkpoint), in eval mode on ``device``. A checkpoint whose head does not fit the record
    (another task, another class count) is an error instead of a randomly initialized head;
    other heads are fine (a multi-task student can teach one task: Noisy Student's iteration)."""
    record = read_record(directory)
    try:
        loaded = load_model(directory, device, tasks=[record.task])
    except CheckpointError as error:
        raise TeacherError(f"teacher {directory}: no trained '{record.task}' head as {RECORD_NAME} "
                           f"says: {error}") from None
    teacher = Teacher(loaded.model, loaded.tasks[record.task], record, loaded.checkpoint,
                      loaded.checkpoint_sha256())
    return ModelTeacher(teacher, directory)


class CallableTeacher(LabelingTeacher):
    """Any function ``fn(images float [B, 3, S, S] in [0, 1]) -> list of B predictions`` in
    ``task``'s prediction convention (see the module docstring).

    ``version`` is recorded in the manifest in place of a checkpoint hash: change it when the
    function changes, so a resumed run does not mix labels of two functions.
    """

    def __init__(self, task: Task, fn: Callable[[Tensor], Sequence[Any]], name: str,
                 input_size: int = 64, version: str = "") -> None:
        self.task = task
        self.fn = fn
        self.name = name
        self.input_size = input_size
        self.version = version

    def predict(self, images: Tensor) -> list[Any]:
        predictions = list(self.fn(images))
        if len(predictions) != images.shape[0]:
            raise TeacherError(f"teacher '{self.name}': returned {len(predictions)} predictions "
                               f"for {images.shape[0]} images")
        return predictions

    def entry(self) -> TeacherEntry:
        return TeacherEntry(name=self.name, task=self.task.name, kind="callable",
                            input_size=self.input_size, class_names=self.class_names,
                            num_classes=self.num_classes, task_options=task_options(self.task),
                            details={"function": getattr(self.fn, "__qualname__", repr(self.fn)),
                                     "version": self.version})
