"""Shared fixtures for the labeler tests: a small world image set and tiny random teachers (random
weights are enough to test the mechanics: shards, resume, processes, manifests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from must.models import ModelConfig, build_model
from must.tasks import build_task
from must.files import CHECKPOINT_NAME
from must.label.teachers import TeacherRecord, save_record
from must.world import CATEGORIES, SEGMENTATION_CLASSES, generate

TINY = ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16)
WORLD_SIZE = 32
WORLD_COUNT = 40


def make_teacher(directory: Path, task_name: str, image_size: int = WORLD_SIZE, seed: int = 0,
                 **options: Any) -> Path:
    """A random-weight teacher directory (checkpoint.pt + teacher.json) for ``task_name``."""
    torch.manual_seed(seed)
    task = build_task(task_name, **options)
    model = build_model(TINY, {task.name: task})
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, directory / CHECKPOINT_NAME)
    save_record(TeacherRecord(task=task_name, task_options=options, model=TINY,
                              image_size=image_size, batch_size=16, learning_rate=0.05), directory)
    return directory


TEACHER_OPTIONS: dict[str, dict[str, Any]] = {
    "classification": {"num_classes": len(CATEGORIES), "class_names": list(CATEGORIES)},
    "detection": {"num_classes": len(CATEGORIES), "class_names": list(CATEGORIES)},
    "segmentation": {"num_classes": len(SEGMENTATION_CLASSES),
                     "class_names": list(SEGMENTATION_CLASSES)},
    "depth": {},
}


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 world 'pool' images at 32 px, with every label (a partially labeled set when read
    with a task subset, an unlabeled one as ``folder`` over ``images/``)."""
    return generate("pool", tmp_path_factory.mktemp("world") / "pool", count=WORLD_COUNT,
                    size=WORLD_SIZE, seed=0, progress=False)


@pytest.fixture(scope="session")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny random teacher per MuST task."""
    root = tmp_path_factory.mktemp("teachers")
    return {task: make_teacher(root / task, task, **options)
            for task, options in TEACHER_OPTIONS.items()}
