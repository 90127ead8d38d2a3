"""The loader's reading of ``teacher.json`` through the typed :class:`TeacherRecord` (what ``must
teach`` writes): the fields a model is rebuilt from, and a bad file as one error naming it. Loading
the weights of every record kind is covered in ``tests/predict/test_predictor.py``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from must.models.config import ModelConfig
from must.models.loading import Trained, read_model_record
from must.models.records import TeacherRecord, write_record
from must.models.weights import CheckpointError

MODEL = ModelConfig(backbone="resnet18", width=0.25, fpn_channels=32, init="pretrain/checkpoint.pt")


def test_a_written_teacher_record_reads_back(tmp_path: Path) -> None:
    record = TeacherRecord(task="segmentation", task_options={"num_classes": 3}, model=MODEL, image_size=48,
                           batch_size=16, learning_rate=0.05, steps=30, metrics={"miou": 0.4},
                           checkpoint="../student/checkpoint.pt")
    (tmp_path / "teacher").mkdir()
    write_record(record, tmp_path / "teacher")
    read = read_model_record(tmp_path / "teacher")
    assert (read.kind, read.tasks, read.image_size) == ("teacher", {"segmentation": {"num_classes": 3}}, 48)
    assert read.model == ModelConfig(backbone="resnet18", width=0.25, fpn_channels=32)  # no initial weights
    assert read.checkpoint == (tmp_path / "student" / "checkpoint.pt").resolve()
    assert read.trained == Trained(30, 16, 0.05, {"miou": 0.4})


def test_a_sparse_teacher_record_leaves_the_unstated_recipe_unknown(tmp_path: Path) -> None:
    (tmp_path / "teacher.json").write_text(json.dumps({"task": "depth", "steps": 5}))
    read = read_model_record(tmp_path)
    assert read.trained == Trained(steps=5) and read.image_size == 64
    assert read.checkpoint == (tmp_path / "checkpoint.pt").resolve()


@pytest.mark.parametrize("record, problem", [
    ({"task": "depth", "colour": 3}, "unknown config key 'colour'"),
    ({"task": "depth", "image_size": "big"}, "image_size"),
    ({"task": "depth", "task_options": [1, 2]}, "task_options"),
    ({"task": "depth", "model": {"width": "wide"}}, "width"),
    ({"task": ""}, "task"),
    ({"image_size": 32}, "task"),
])
def test_a_bad_teacher_record_is_one_checkpoint_error_naming_it(tmp_path: Path, record: dict,
                                                                problem: str) -> None:
    (tmp_path / "teacher.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=problem) as error:
        read_model_record(tmp_path)
    assert str(error.value).startswith(f"{tmp_path / 'teacher.json'}: ") and "\n" not in str(error.value)
