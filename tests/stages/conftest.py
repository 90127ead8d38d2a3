"""Shared fixtures of the stage tests: one tiny world (every teacher domain and the pool, sized as
the shipped ``tiny`` preset), the four single-task teachers trained on it once, the pool labeled
by them, and a multi-task student trained on the pool's pseudo labels plus the objects' real
classes (MuST sec. 3.1-3.4).

The tests of this directory share these session fixtures, so they are kept in one xdist group
(``pytestmark = pytest.mark.xdist_group(STAGES_GROUP)`` in each module): built once, not once per
worker.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from must.config import read_yaml
from must.data.readers import DatasetConfig
from must.label.labeler import LabelConfig, label_dataset
from must.models import ModelConfig
from must.world.splits import split_seed
from must.stages.demo import TEACHER_DOMAINS
from must.stages.student import SourceConfig, StudentConfig, run_student
from must.stages.teach import TeachConfig, run_teach
from must.train.config import TrainConfig, WeightingConfig
from must.world import generate

STAGES_GROUP = "stages"
TINY_PRESET = read_yaml("tiny")
"""The shipped ``tiny`` preset (``must demo --preset tiny``): its model, image size and world."""
TINY = ModelConfig(**TINY_PRESET["model"])
SIZE = TINY_PRESET["image_size"]
SPLITS = {domain: TINY_PRESET["world"]["splits"][domain] for domain in (*TEACHER_DOMAINS.values(), "pool")}
TEACHER_RECIPES = {"classification": (8, 0.1), "detection": (4, 0.01), "segmentation": (4, 0.03),
                   "depth": (8, 0.05)}
"""Task -> (batch size, learning rate): distinct per teacher, so the MuST weights differ."""
TEACHER_STEPS = 3
STUDENT_TRAIN = TrainConfig(steps=3, batch_size=8, lr=0.04, log_every=1, progress=False,
                            weighting=WeightingConfig(method="must"))


def world_set(world: Path, domain: str, split: str, tasks: tuple[str, ...] = ()) -> DatasetConfig:
    return DatasetConfig(format="world", root=str(world / domain / split), tasks=tasks)


def pool_set(world: Path) -> DatasetConfig:
    """The shared pool as unlabeled images (MuST sec. 3.2: the teachers label it)."""
    return DatasetConfig(format="folder", root=str(world / "pool" / "train" / "images"))


def teach_config(world: Path, task: str) -> TeachConfig:
    batch_size, lr = TEACHER_RECIPES[task]
    domain = TEACHER_DOMAINS[task]
    return TeachConfig(task=task, data=world_set(world, domain, "train"), val=world_set(world, domain, "val"),
                       model=TINY, image_size=SIZE, eval_batch_size=8,
                       train=TrainConfig(steps=TEACHER_STEPS, batch_size=batch_size, lr=lr, progress=False))


def label_pool(world: Path, teacher_dirs: list[Path], out: Path) -> Path:
    """``must label`` of the pool with ``teacher_dirs``; returns the output directory."""
    config = LabelConfig(teachers=tuple(str(d) for d in teacher_dirs), data=pool_set(world),
                         batch_size=8, workers=0, images_per_shard=16, device="cpu")
    label_dataset(config, out)
    return out


def student_config(world: Path, teacher_dirs: list[Path], pseudo: Path, **changes: Any) -> StudentConfig:
    """Two sources: the pool with pseudo labels and the objects with their real classes."""
    sources = (SourceConfig(data=pool_set(world), pseudo=(str(pseudo),)),
               SourceConfig(data=world_set(world, "objects", "train", ("classification",))))
    val = {task: world_set(world, domain, "val") for task, domain in TEACHER_DOMAINS.items()}
    config = StudentConfig(sources=sources, teachers=tuple(str(d) for d in teacher_dirs), val=val,
                           model=TINY, train=STUDENT_TRAIN, image_size=SIZE, eval_batch_size=8)
    return dataclasses.replace(config, **changes)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def assert_finite_metrics(metrics: dict[str, float]) -> None:
    assert metrics, "no metrics"
    for name, value in metrics.items():
        assert isinstance(value, float) and math.isfinite(value), (name, value)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("stages_world")
    for domain, splits in SPLITS.items():
        for split, count in splits.items():
            generate(domain, root / domain / split, count=count, size=SIZE,
                     seed=split_seed(0, domain, split), progress=False)
    return root


@pytest.fixture(scope="session")
def teachers(world: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four teachers of MuST sec. 3.1, each on its own domain."""
    root = tmp_path_factory.mktemp("stages_teachers")
    directories = {}
    for task in TEACHER_DOMAINS:
        run_teach(teach_config(world, task), root / task)
        directories[task] = root / task
    return directories


@pytest.fixture(scope="session")
def pseudo(world: Path, teachers: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return label_pool(world, list(teachers.values()), tmp_path_factory.mktemp("stages_pseudo"))


@pytest.fixture(scope="session")
def student(world: Path, teachers: dict[str, Path], pseudo: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("stages_student")
    run_student(student_config(world, list(teachers.values()), pseudo), out)
    return out
