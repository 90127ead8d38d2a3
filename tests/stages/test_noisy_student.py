"""The Noisy Student loop of MuST (sec. 3.4, SPEC S3): label -> train -> label again with the
student's exported teachers -> train a second, noised student (RandAugment, stochastic depth,
classification dropout) on the student's pseudo labels."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from must.label.manifest import read_manifest
from must.stages.demo import TEACHER_DOMAINS
from must.models.records import STUDENT_RECORD
from must.stages.student import RandAugmentConfig, run_student
from must.files import file_sha256
from must.label.teachers import read_record

from .conftest import (STAGES_GROUP, STUDENT_TRAIN, TINY, assert_finite_metrics, label_pool,
                       read_jsonl, student_config)

pytestmark = pytest.mark.xdist_group(STAGES_GROUP)


def test_second_round_learns_from_the_student(world: Path, student: Path, tmp_path: Path) -> None:
    exported = [student / "as_teacher" / task for task in TEACHER_DOMAINS]
    pseudo = label_pool(world, exported, tmp_path / "pseudo_round2")

    checkpoint = student / "checkpoint.pt"
    manifest = read_manifest(pseudo)
    assert {entry.task for entry in manifest.teachers} == set(TEACHER_DOMAINS)
    for entry in manifest.teachers:  # every label of round 2 comes from the one student
        assert Path(entry.checkpoint) == checkpoint.resolve()
        assert entry.checkpoint_sha256 == file_sha256(checkpoint)

    noisy = student_config(world, exported, pseudo, randaugment=RandAugmentConfig(num_ops=2, magnitude=9),
                           model=dataclasses.replace(TINY, drop_path_rate=0.1),
                           tasks={"classification": {"dropout": 0.1}})
    out = tmp_path / "student_round2"
    metrics = run_student(noisy, out)

    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["step"] == STUDENT_TRAIN.steps
    record = json.loads((out / STUDENT_RECORD).read_text())
    assert record["tasks"]["classification"]["dropout"] == pytest.approx(0.1)
    assert record["model"]["drop_path_rate"] == pytest.approx(0.1)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["randaugment"] == {"num_ops": 2, "magnitude": 9}
    assert set(metrics) == set(TEACHER_DOMAINS)
    for task_metrics in metrics.values():
        assert_finite_metrics(task_metrics)
    assert record["metrics"] == metrics
    for line in read_jsonl(out / "metrics.jsonl"):
        assert all(math.isfinite(value) for value in line.values())

    # The MuST rule of round 2 reads the student's recipe: its tasks' teacher is the student.
    weights = [line for line in read_jsonl(out / "metrics.jsonl") if "lr" in line][-1]
    assert weights["weight/classification"] == pytest.approx(1.0)  # b_s lr_s / (b_s lr_s)
    # The next round can start again from this student.
    assert read_record(out / "as_teacher" / "classification").task_options["dropout"] == pytest.approx(0.1)
