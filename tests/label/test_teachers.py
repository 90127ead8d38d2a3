"""Teacher loading: ours (strict about the head), callables, ``TASK=DIR`` specs, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from must.label.open_teacher import load_labeling_teacher, parse_teacher_spec
from must.label.teachers import CallableTeacher, ModelTeacher, TeacherError, load_model_teacher
from must.tasks import ClassificationTask

from .conftest import make_teacher


def test_model_teacher_predicts_like_the_teacher(teachers: dict[str, Path]) -> None:
    teacher = load_labeling_teacher(teachers["segmentation"], torch.device("cpu"))
    assert isinstance(teacher, ModelTeacher) and teacher.input_size == 32
    reference = load_model_teacher(teachers["segmentation"], torch.device("cpu")).teacher
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference.task.predict(reference.model(images)["segmentation"])
        predictions = teacher.predict(images)
    for ours, theirs in zip(predictions, expected):
        assert torch.equal(ours, theirs)
    entry = teacher.entry()
    assert entry.kind == "must" and entry.task_options["num_classes"] == 15
    assert entry.details["model"]["width"] == 0.125


def test_student_checkpoint_with_more_heads_can_teach_one_task(tmp_path: Path) -> None:
    """Noisy Student: the multi-task student becomes a teacher; its other heads are ignored."""
    from must.models import build_model
    from must.tasks import DepthTask
    from must.label.teachers import TeacherRecord, save_record

    from .conftest import TINY

    tasks = {"depth": DepthTask(), "classification": ClassificationTask(4)}
    torch.save({"model": build_model(TINY, tasks).state_dict()}, tmp_path / "checkpoint.pt")
    save_record(TeacherRecord(task="depth", model=TINY, image_size=16), tmp_path)
    teacher = load_labeling_teacher(f"depth={tmp_path}", torch.device("cpu"))
    assert teacher.task.name == "depth" and teacher.input_size == 16


def test_input_size_override_and_spec_parsing(teachers: dict[str, Path]) -> None:
    teacher = load_labeling_teacher(teachers["depth"], torch.device("cpu"), input_size=48)
    assert teacher.input_size == 48
    assert parse_teacher_spec("depth=/a/b") == ("depth", Path("/a/b"))
    assert parse_teacher_spec("/a/b=c") == (None, Path("/a/b=c"))  # not a task: part of the path


def test_callable_teacher_checks_its_output_count() -> None:
    teacher = CallableTeacher(ClassificationTask(2), lambda images: [torch.tensor([1.0, 0.0])], "one")
    assert len(teacher.predict(torch.rand(1, 3, 8, 8))) == 1
    with pytest.raises(TeacherError, match="returned 1 predictions for 3 images"):
        teacher.predict(torch.rand(3, 3, 8, 8))
    assert teacher.entry().task_options == {"num_classes": 2}


def test_directories_that_are_not_teachers(tmp_path: Path) -> None:
    with pytest.raises(TeacherError, match="neither teacher.json"):
        load_labeling_teacher(tmp_path, torch.device("cpu"))
    make_teacher(tmp_path / "normals", "normals")
    # normals have a label format (dense float16) even though MuST never pseudo-labels them
    assert load_labeling_teacher(tmp_path / "normals", torch.device("cpu")).task.name == "normals"
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "teacher.json").write_text("{}")
    with pytest.raises(ValueError, match="task"):
        load_labeling_teacher(tmp_path / "broken", torch.device("cpu"))
