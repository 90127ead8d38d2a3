"""Shared fixtures of the prediction tests: a tiny five-task model (classification, detection,
segmentation, depth, normals) trained for a few steps on the embedded world with real labels,
written as ``must train`` writes a student (``student.json`` + ``checkpoint.pt``), and a folder
of non-square photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from must.data.loader import make_loader
from must.data.readers import DatasetConfig, open_dataset
from must.models import ModelConfig, build_model
from must.tasks import build_task
from must.train.config import TrainConfig
from must.train.engine import fit
from must.world import CATEGORIES, SEGMENTATION_CLASSES, generate

TINY = ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16)
SIZE = 32
TASK_OPTIONS = {
    "classification": {"num_classes": len(CATEGORIES), "class_names": list(CATEGORIES)},
    # a low score threshold: a model trained for three steps still returns boxes to map back
    "detection": {"num_classes": len(CATEGORIES), "class_names": list(CATEGORIES),
                  "box_score_threshold": 0.0},
    "segmentation": {"num_classes": len(SEGMENTATION_CLASSES), "class_names": list(SEGMENTATION_CLASSES)},
    "depth": {},
    "normals": {},
}
PHOTO_SIZES = {"a/wide": (40, 72), "a/tall": (70, 30), "square": (32, 32), "b/c/small": (20, 28)}
"""Relative path (without suffix) -> (height, width)."""


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate("pool", tmp_path_factory.mktemp("predict_world") / "pool", count=12, size=SIZE,
                    seed=0, progress=False)


@pytest.fixture(scope="session")
def student(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five heads on one trunk, three SGD steps on the world's real labels."""
    out = tmp_path_factory.mktemp("predict_student")
    tasks = {name: build_task(name, **options) for name, options in TASK_OPTIONS.items()}
    model = build_model(TINY, tasks)
    dataset = open_dataset(DatasetConfig(format="world", root=str(world)))
    config = TrainConfig(steps=3, batch_size=4, lr=0.02, progress=False)
    fit(model, tasks, lambda first: make_loader([dataset], tasks, 4, 0, SIZE, start_step=first),
        config, out)
    record = {"tasks": TASK_OPTIONS, "model": {"backbone": "resnet18", "width": 0.125, "fpn_channels": 16},
              "image_size": SIZE, "batch_size": 4, "learning_rate": 0.02, "steps": 3,
              "metrics": {"classification": {"top1": 0.1}}}
    (out / "student.json").write_text(json.dumps(record))
    return out


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Non-square JPEG and PNG photos in nested folders."""
    root = tmp_path_factory.mktemp("photos")
    generator = np.random.default_rng(0)
    for index, (key, (height, width)) in enumerate(PHOTO_SIZES.items()):
        path = root / (key + (".jpg" if index % 2 else ".png"))
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(generator.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return root
