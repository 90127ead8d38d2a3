"""load_student / load_transfer_model: rebuilt models equal the saved ones, or fail saying why."""

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from must import config as config_lib
from must.config import ConfigError
from must.models import CheckpointError
from must.report.student import load_student, load_transfer_model


def test_student_round_trip(run_dir: Path, expected: Any) -> None:
    student = load_student(run_dir / "student")
    assert list(student.tasks) == list(expected.student_tasks)
    assert student.model.task_names == list(expected.student_tasks)
    assert student.image_size == expected.image_size and student.config == expected.model
    assert not student.model.training and student.left_out == []
    saved = torch.load(run_dir / "student" / "checkpoint.pt", weights_only=True)["model"]
    for key, value in student.model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert student.tasks["classification"].class_names == ["cube", "ball", "cone", "ring"]


def test_pretext_heads_are_left_out(run_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(run_dir / "student", tmp_path / "student")
    record_path = tmp_path / "student" / "student.json"
    record = json.loads(record_path.read_text())
    record["tasks"]["rotation"] = {}
    record_path.write_text(json.dumps(record))
    student = load_student(tmp_path / "student")
    assert student.left_out == ["rotation"] and "rotation" not in student.tasks


def test_a_head_missing_from_the_checkpoint_is_an_error(tmp_path: Path, files: Any, expected: Any) -> None:
    files.save_model({"depth": {}}, tmp_path / "checkpoint.pt")
    files.write_json(tmp_path / "student.json", {"tasks": {"depth": {}, "segmentation": {"num_classes": 3}},
                                                  "model": config_lib.to_dict(expected.model)})
    with pytest.raises(CheckpointError, match="heads.segmentation"):
        load_student(tmp_path)


def test_a_head_of_another_shape_is_an_error(tmp_path: Path, files: Any, expected: Any) -> None:
    files.save_model({"segmentation": {"num_classes": 3}}, tmp_path / "checkpoint.pt")
    files.write_json(tmp_path / "student.json", {"tasks": {"segmentation": {"num_classes": 7}},
                                                  "model": config_lib.to_dict(expected.model)})
    with pytest.raises(CheckpointError, match="segmentation"):
        load_student(tmp_path)


def test_missing_or_bad_records(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="student.json"):
        load_student(tmp_path)
    (tmp_path / "student.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_student(tmp_path)
    (tmp_path / "student.json").write_text(json.dumps({"model": {}}))
    with pytest.raises(CheckpointError, match="no 'tasks'"):
        load_student(tmp_path)


def test_transfer_model_is_built_from_its_cell_record(tmp_path: Path, files: Any, expected: Any) -> None:
    files.save_cell("normals", {"hidden_channels": 8}, tmp_path)
    loaded = load_transfer_model(tmp_path, "normals")
    assert list(loaded.tasks) == ["normals"] and not loaded.model.training and loaded.kind == "transfer"
    with pytest.raises(ConfigError, match="no task"):
        load_transfer_model(tmp_path, "depth")
    files.write_json(tmp_path / "cell.json", {"task": "normals", "model": config_lib.to_dict(expected.model),
                                               "downstream": {}})
    with pytest.raises(CheckpointError):  # the default options build a head of another width
        load_transfer_model(tmp_path, "normals")


