"""``student.json`` and ``pretrain.json`` as typed records: they round-trip, read the files the
stages wrote as plain dicts (same keys, same bytes), and a bad file is a one-line error naming it."""

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from must import config as config_lib
from must.models.config import ModelConfig
from must.models.records import (PretrainRecord, StudentRecord, read_pretrain_record,
                                 read_student_record, write_record)
from must.models.weights import CheckpointError

MODEL = ModelConfig(backbone="resnet18", width=0.25, fpn_channels=32)
STUDENT = StudentRecord(tasks={"detection": {"num_classes": 2, "class_names": ["a", "b"]}, "depth": {},
                               "simclr": {}},
                        model=MODEL, image_size=48, batch_size=16, learning_rate=0.05, steps=30,
                        metrics={"depth": {"delta1": 0.5, "rmse": 1.25}})
PRETRAIN = PretrainRecord(method="multi", tasks={"rotation": {"name": "rotation", "kind": "self_supervised"}},
                          task_options={"rotation": {}}, schedule="joint", lasso=0.001, harmonize=True,
                          model=MODEL, image_size=64, batch_size=8, learning_rate=0.05, steps=12,
                          losses={"loss": 1.5, "loss/rotation": 1.5}, checkpoint="checkpoint.pt")


def test_records_round_trip(tmp_path: Path) -> None:
    assert write_record(STUDENT, tmp_path) == tmp_path / "student.json"
    assert write_record(PRETRAIN, tmp_path) == tmp_path / "pretrain.json"
    assert read_student_record(tmp_path) == STUDENT
    assert read_pretrain_record(tmp_path) == PRETRAIN


def test_records_are_written_as_the_plain_dicts_were(tmp_path: Path) -> None:
    # the dicts ``must train`` and ``must pretrain`` wrote before the records were typed
    student = {"tasks": STUDENT.tasks, "model": config_lib.to_dict(MODEL), "image_size": 48,
               "batch_size": 16, "learning_rate": 0.05, "steps": 30, "metrics": STUDENT.metrics}
    pretrain = {"method": "multi", "tasks": PRETRAIN.tasks, "task_options": {"rotation": {}},
                "schedule": "joint", "lasso": 0.001, "harmonize": True, "model": config_lib.to_dict(MODEL),
                "image_size": 64, "batch_size": 8, "learning_rate": 0.05, "steps": 12,
                "losses": PRETRAIN.losses, "checkpoint": "checkpoint.pt"}
    assert write_record(STUDENT, tmp_path).read_text() == json.dumps(student, indent=2)
    assert write_record(PRETRAIN, tmp_path).read_text() == json.dumps(pretrain, indent=2)


def test_files_in_todays_format_read(tmp_path: Path) -> None:
    # as a demo run's student/student.json and pretrain/simclr/pretrain.json hold them
    model = {"backbone": "resnet18", "width": 0.25, "fpn_channels": 32, "norm": "batch", "sync_bn": False,
             "drop_path_rate": 0.0, "init": "runs/demo/pretrain/simclr/checkpoint.pt", "init_heads": False,
             "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    (tmp_path / "student.json").write_text(json.dumps({
        "tasks": {"segmentation": {"num_classes": 3, "class_names": ["floor", "wall", "sky"]}, "depth": {}},
        "model": model, "image_size": 64, "batch_size": 32, "learning_rate": 0.05, "steps": 600,
        "metrics": {"depth": {"delta1": 0.81, "rmse": 2}}}))
    (tmp_path / "pretrain.json").write_text(json.dumps({
        "method": "simclr", "tasks": {"simclr": {"name": "simclr", "kind": "self_supervised",
                                                 "projection_dim": 128}},
        "task_options": {}, "schedule": "alternate", "lasso": None, "harmonize": False, "model": model,
        "image_size": 64, "batch_size": 32, "learning_rate": 0.05, "steps": 120,
        "losses": {"loss": 3.6, "loss/simclr": 3.6}, "checkpoint": "checkpoint.pt"}))
    student = read_student_record(tmp_path)
    assert student.tasks["segmentation"]["class_names"] == ["floor", "wall", "sky"]
    assert student.model.init == "runs/demo/pretrain/simclr/checkpoint.pt" and student.model.width == 0.25
    assert student.metrics == {"depth": {"delta1": 0.81, "rmse": 2.0}} and student.steps == 600
    pretrain = read_pretrain_record(tmp_path)
    assert pretrain.method == "simclr" and pretrain.lasso is None and pretrain.losses["loss/simclr"] == 3.6
    # a hand-written record with fewer keys takes the defaults
    (tmp_path / "student.json").write_text(json.dumps({"metrics": {"depth": {"rmse": 0.3}}}))
    sparse = read_student_record(tmp_path)
    assert sparse == StudentRecord(metrics={"depth": {"rmse": 0.3}})
    # the recipe it does not state stays unknown (a model card shows "?", not a made-up 32 / 0.1 / 0)
    assert (sparse.steps, sparse.batch_size, sparse.learning_rate) == (None, None, None)


def read_teacher(directory: Path) -> object:
    # the student stage reads several teachers' records: the message must say which one is bad
    from must.label.teachers import read_record

    return read_record(directory)


@pytest.mark.parametrize("name, read, text, problem", [
    ("student.json", read_student_record, "{not json", "not valid JSON"),
    ("student.json", read_student_record, "[1, 2]", "not a JSON object"),
    ("student.json", read_student_record, '{"tasks": {}, "colour": 3}', "unknown config key 'colour'"),
    ("student.json", read_student_record, '{"steps": "many"}', "steps: expected an integer"),
    ("teacher.json", read_teacher, "{not json", "not valid JSON"),
    ("teacher.json", read_teacher, "[1, 2]", "not a JSON object"),
    ("teacher.json", read_teacher, '{"task": "depth", "colour": 3}', "unknown config key 'colour'"),
    ("teacher.json", read_teacher, "{}", "task"),
])
def test_a_bad_record_is_one_line_naming_the_file(tmp_path: Path, name: str, read: Callable[[Path], object],
                                                  text: str, problem: str) -> None:
    (tmp_path / name).write_text(text)
    with pytest.raises(CheckpointError, match=problem) as error:
        read(tmp_path)
    assert str(error.value).startswith(f"{tmp_path / name}: ") and "\n" not in str(error.value)


def test_a_missing_record_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'pretrain.json'}: .*must pretrain"):
        read_pretrain_record(tmp_path)


def test_teacher_records_round_trip(tmp_path: Path) -> None:
    from must.models.records import TeacherRecord, read_teacher_record

    record = TeacherRecord(task="segmentation", task_options={"num_classes": 3}, model=MODEL, image_size=48,
                           batch_size=16, learning_rate=0.05, steps=30, metrics={"miou": 0.4})
    assert write_record(record, tmp_path) == tmp_path / "teacher.json"
    assert read_teacher_record(tmp_path) == record
