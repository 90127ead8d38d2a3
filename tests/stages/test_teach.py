"""``must teach`` end to end (MuST sec. 3.1): each teacher trains on its own world domain, records
the batch size and learning rate the MuST loss rule reads later (sec. 3.3), scores itself on its
validation set, and a rerun resumes instead of training again."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from must.config import ConfigError
from must.data.readers import DataError
from must.stages.demo import TEACHER_DOMAINS
from must.stages.teach import run_teach
from must.label.teachers import load_model_teacher, read_record

from .conftest import (STAGES_GROUP, TEACHER_RECIPES, TEACHER_STEPS, assert_finite_metrics, pool_set,
                       teach_config)

pytestmark = pytest.mark.xdist_group(STAGES_GROUP)


@pytest.mark.parametrize("task", list(TEACHER_DOMAINS))
def test_teacher_writes_checkpoint_record_and_metrics(teachers: dict[str, Path], task: str) -> None:
    directory = teachers[task]
    checkpoint = torch.load(directory / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert checkpoint["step"] == TEACHER_STEPS
    assert any(key.startswith(f"heads.{task}.") for key in checkpoint["model"])

    record = read_record(directory)
    batch_size, lr = TEACHER_RECIPES[task]
    assert (record.task, record.batch_size, record.learning_rate, record.steps) == (task, batch_size, lr,
                                                                                    TEACHER_STEPS)
    assert_finite_metrics(record.metrics)
    assert json.loads((directory / "metrics.json").read_text()) == {task: record.metrics}
    assert (directory / "config.yaml").exists()

    teacher = load_model_teacher(directory, torch.device("cpu")).teacher  # record and checkpoint agree
    assert teacher.task.name == task and not teacher.model.training


def test_rerun_resumes_without_training(world: Path, teachers: dict[str, Path]) -> None:
    directory = teachers["classification"]
    checkpoint = directory / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns, checkpoint.read_bytes()
    first = read_record(directory)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # same config: no "resuming with a different config"
        again = run_teach(teach_config(world, "classification"), directory)
    assert (checkpoint.stat().st_mtime_ns, checkpoint.read_bytes()) == before
    # The finished run is scored again, not left without metrics.
    assert again.metrics == pytest.approx(first.metrics)
    assert read_record(directory).metrics == pytest.approx(first.metrics)
    assert json.loads((directory / "metrics.json").read_text())["classification"] == pytest.approx(first.metrics)


def test_dataset_without_the_task_labels_names_the_dataset(world: Path, tmp_path: Path) -> None:
    copy = tmp_path / "objects_without_depth"
    shutil.copytree(world / "objects" / "val", copy)
    shutil.rmtree(copy / "depth")
    config = teach_config(world, "depth")
    config = dataclasses.replace(config, data=dataclasses.replace(config.data, root=str(copy)))
    with pytest.raises(DataError, match="no depth targets") as error:
        run_teach(config, tmp_path / "depth_teacher")
    assert str(copy) in str(error.value)
    assert not (tmp_path / "depth_teacher" / "checkpoint.pt").exists()


def test_unlabeled_dataset_names_the_dataset(world: Path, tmp_path: Path) -> None:
    config = dataclasses.replace(teach_config(world, "classification"), data=pool_set(world))
    with pytest.raises(ConfigError, match="provides no tasks") as error:
        run_teach(config, tmp_path / "teacher")
    assert pool_set(world).root in str(error.value)


def test_no_data_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no training data"):
        run_teach(dataclasses.replace(teach_config(tmp_path, "classification"), data=None), tmp_path / "t")
