"""``must train`` end to end (MuST sec. 3.2-3.4): the pool labeled by the four teachers plus a
second source with real classification labels train one multi-task student whose losses are
weighted by w_i = b_s lr_it / (b_it lr_s) from the teachers' records (sec. 3.3)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from must import config as config_lib
from must.config import ConfigError
from must.label.manifest import read_manifest
from must.stages.demo import TEACHER_DOMAINS
from must.models.records import STUDENT_RECORD
from must.stages.student import SourceConfig, launch_student, resolved_config, run_student
from must.label.teachers import load_model_teacher, read_record
from must.train.config import TrainConfig, WeightingConfig

from .conftest import (SIZE, STAGES_GROUP, STUDENT_TRAIN, TINY, assert_finite_metrics, pool_set, read_jsonl,
                       student_config)

pytestmark = pytest.mark.xdist_group(STAGES_GROUP)


def test_pool_is_labeled_by_every_teacher(pseudo: Path, teachers: dict[str, Path]) -> None:
    manifest = read_manifest(pseudo)
    assert {entry.task for entry in manifest.teachers} == set(TEACHER_DOMAINS)
    for entry in manifest.teachers:
        assert Path(entry.checkpoint) == (teachers[entry.task] / "checkpoint.pt").resolve()


def test_student_has_every_head_and_metric(student: Path) -> None:
    state = torch.load(student / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["step"] == STUDENT_TRAIN.steps
    heads = {key.split(".")[1] for key in state["model"] if key.startswith("heads.")}
    assert heads == set(TEACHER_DOMAINS)

    record = json.loads((student / STUDENT_RECORD).read_text())
    assert set(record["tasks"]) == set(TEACHER_DOMAINS)
    assert (record["batch_size"], record["learning_rate"]) == (STUDENT_TRAIN.batch_size, STUDENT_TRAIN.lr)
    assert set(record["metrics"]) == set(TEACHER_DOMAINS)
    for metrics in record["metrics"].values():
        assert_finite_metrics(metrics)


def test_must_loss_weights_follow_teacher_recipes(student: Path, teachers: dict[str, Path]) -> None:
    """MuST sec. 3.3: w_i = b_s lr_it / (b_it lr_s), except depth, whose weight is set apart."""
    b_s, lr_s = STUDENT_TRAIN.batch_size, STUDENT_TRAIN.lr
    expected = {}
    for task, directory in teachers.items():
        record = read_record(directory)
        expected[task] = b_s * record.learning_rate / (record.batch_size * lr_s)
    expected["depth"] = STUDENT_TRAIN.weighting.depth_weight
    assert len(set(expected.values())) > 2  # the recipes differ, so the check can tell tasks apart

    logged = [line for line in read_jsonl(student / "metrics.jsonl") if "lr" in line]
    assert logged
    for line in logged:
        assert {task: line[f"weight/{task}"] for task in expected} == pytest.approx(expected)
        assert all(f"loss/{task}" in line for task in TEACHER_DOMAINS)

    saved = yaml.safe_load((student / "config.yaml").read_text())["train"]["weighting"]["teachers"]
    for task, directory in teachers.items():
        record = read_record(directory)
        assert saved[task] == {"batch_size": record.batch_size, "lr": record.learning_rate}


@pytest.mark.parametrize("task", list(TEACHER_DOMAINS))
def test_student_exports_a_teacher_per_task(student: Path, task: str) -> None:
    directory = student / "as_teacher" / task
    record = read_record(directory)
    assert record.task == task and record.model.init is None
    teacher = load_model_teacher(directory, torch.device("cpu")).teacher
    assert teacher.checkpoint == (student / "checkpoint.pt").resolve()
    student_state = torch.load(student / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    for key, value in teacher.model.state_dict().items():
        assert torch.equal(value, student_state[key]), key


def test_student_starts_from_model_init(world: Path, teachers: dict[str, Path], pseudo: Path,
                                        tmp_path: Path) -> None:
    """``model.init`` = the classification teacher: backbone + FPN start from its weights (a step
    at a vanishing learning rate leaves them where they started). Equal weights: the MuST rule
    would scale each loss by lr_it / lr_s and undo the small learning rate."""
    init = teachers["classification"] / "checkpoint.pt"
    train = dataclasses.replace(STUDENT_TRAIN, steps=1, lr=1e-12, momentum=0.0, weight_decay=0.0,
                                weighting=WeightingConfig(method="equal"))
    config = student_config(world, list(teachers.values()), pseudo, val={}, train=train,
                            model=dataclasses.replace(TINY, init=str(init)))
    run_student(config, tmp_path)
    teacher_state = torch.load(init, map_location="cpu", weights_only=False)["model"]
    student_state = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    trunk = [key for key, value in teacher_state.items()
             if key.startswith(("backbone.", "fpn.")) and value.is_floating_point() and "running" not in key]
    assert len(trunk) > 10
    for key in trunk:
        torch.testing.assert_close(student_state[key], teacher_state[key], rtol=0, atol=1e-6, msg=key)
    # The export for the next round forgets the init: the student's own checkpoint holds the weights.
    assert read_record(tmp_path / "as_teacher" / "depth").model.init is None


def test_unknown_validation_task_is_refused(world: Path, teachers: dict[str, Path], pseudo: Path,
                                            tmp_path: Path) -> None:
    val = {"normals": student_config(world, [], pseudo).val["depth"]}
    config = student_config(world, list(teachers.values()), pseudo, val=val,
                            train=TrainConfig(steps=1, batch_size=8, progress=False))
    with pytest.raises(ConfigError, match="no task 'normals'"):
        run_student(config, tmp_path)


@pytest.mark.slow
def test_launch_student_in_two_processes(world: Path, teachers: dict[str, Path], pseudo: Path,
                                         tmp_path: Path) -> None:
    """``launch_student(processes=2)`` (what ``must demo`` does on a multi-core CPU): torchrun runs
    ``must train`` as 2 DDP ranks; the run directory is a finished student's, whose saved config
    is the resolved one (so the demo sees the stage as done), trained by two ranks."""
    config = student_config(world, list(teachers.values()), pseudo)
    launch_student(config, tmp_path, processes=2)
    record = json.loads((tmp_path / STUDENT_RECORD).read_text())
    assert set(record["metrics"]) == set(TEACHER_DOMAINS)
    assert_finite_metrics({f"{t}/{k}": v for t, m in record["metrics"].items() for k, v in m.items()})
    assert yaml.safe_load((tmp_path / "config.yaml").read_text()) == yaml.safe_load(
        yaml.safe_dump(config_lib.to_dict(resolved_config(config))))
    checkpoint = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert checkpoint["world_size"] == 2 and checkpoint["step"] == config.train.steps


def test_launch_student_failure_names_the_command(world: Path, teachers: dict[str, Path], pseudo: Path,
                                                  tmp_path: Path) -> None:
    config = student_config(world, list(teachers.values()), pseudo, teachers=(str(tmp_path / "nowhere"),))
    with pytest.raises(RuntimeError, match="2-process run failed.*torch.distributed.run.*must.cli train"):
        launch_student(config, tmp_path / "out", processes=2)


def test_train_without_val_says_where_its_outputs_went(world: Path, teachers: dict[str, Path], pseudo: Path,
                                                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from must.cli import main

    arguments = ["train", *(item for d in teachers.values() for item in ("--teacher", str(d))),
                 "--data", f"folder:{world / 'pool' / 'train' / 'images'}", "--pseudo", str(pseudo),
                 "--out", str(tmp_path), "train.steps=1", "train.batch_size=8", "train.progress=false",
                 "model.width=0.125", "model.fpn_channels=16", f"image_size={SIZE}"]
    assert main(arguments) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {tmp_path / 'checkpoint.pt'}" in out
    assert f"{tmp_path / 'as_teacher'}/{{classification,depth,detection,segmentation}}" in out
    assert "no validation set given" in out and "so no metrics" in out


@pytest.mark.slow
def test_two_processes_print_and_warn_once(world: Path, teachers: dict[str, Path], pseudo: Path,
                                           tmp_path: Path, capfd: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A real 2-process gloo run of ``must train`` (what ``must demo`` launches), its output
    captured: the metric lines and the bf16 warning come from rank 0 only, once; every image
    carries every task's pseudo label, so DDP does not search for unused parameters and its
    warning about finding none never shows."""
    for key in [key for key in os.environ if key.startswith("MUST_WARNED_")]:
        monkeypatch.delenv(key)  # an earlier test of this worker may have warned: a new run
    sources = (SourceConfig(data=pool_set(world), pseudo=(str(pseudo),)),)
    config = student_config(world, list(teachers.values()), pseudo, sources=sources,
                            train=dataclasses.replace(STUDENT_TRAIN, precision="bf16"))
    launch_student(config, tmp_path, processes=2)
    out, err = capfd.readouterr()
    for task in TEACHER_DOMAINS:
        assert out.count(f"student {task}: ") == 1, out
    assert out.count("student -> ") == 1
    assert (out + err).count("bf16 autocast on CPU") == 1, err
    assert "find_unused_parameters" not in out + err


def test_mu_splits_each_batch_into_labeled_and_unlabeled_shares() -> None:
    """FixMatch's unlabeled:labeled ratio: B = 16, mu = 3 -> 4 images of the labeled sources and 12
    of the unlabeled ones per batch; refused when the batch does not split or a side is missing."""
    from must.data.readers import DatasetConfig
    from must.stages.student import StudentConfig, batch_groups

    data = DatasetConfig(format="folder", root="unused")
    sources = (SourceConfig(data), SourceConfig(data, labeled=False), SourceConfig(data, labeled=False))
    assert batch_groups(StudentConfig(sources=sources), 16) is None
    assert batch_groups(StudentConfig(sources=sources, mu=3), 16) == [([0], 4), ([1, 2], 12)]
    with pytest.raises(ConfigError, match="divisible by 1 \\+ mu = 4"):
        batch_groups(StudentConfig(sources=sources, mu=3), 10)
    with pytest.raises(ConfigError, match="labeled: false"):
        batch_groups(StudentConfig(sources=sources[:1], mu=3), 16)
