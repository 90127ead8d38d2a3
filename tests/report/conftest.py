"""A fake run directory with known numbers and a tiny real student (and normals model)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from must import config as config_lib
from must.models import ModelConfig, build_model
from must.tasks import build_task

MODEL = ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16)
IMAGE_SIZE = 32
STUDENT_TASKS: dict[str, dict[str, Any]] = {
    "classification": {"num_classes": 4, "class_names": ["cube", "ball", "cone", "ring"]},
    "detection": {"num_classes": 3, "representation_size": 32},
    "segmentation": {"num_classes": 5},
    "depth": {},
}
TRANSFER = {  # init -> task -> test value (fractions, higher is better)
    "scratch": {"classification": 0.50, "detection": 0.40, "segmentation": 0.30, "depth": 0.60,
                "normals": 0.20},
    "supervised": {"classification": 0.60, "detection": 0.45, "segmentation": 0.35, "depth": 0.70,
                   "normals": 0.25},
    "must": {"classification": 0.713, "detection": 0.50, "segmentation": 0.45, "depth": 0.68,
             "normals": 0.31},
    "simclr": {"classification": 0.65},
}
LINEAR = {"supervised": {"classification": 0.52}, "must": {"classification": 0.55}}
METRICS = {"classification": "top1", "detection": "ap50_voc", "segmentation": "miou", "depth": "delta1",
           "normals": "within_11_25"}
TIMINGS = {"teach": 12.5, "label": 3.0, "train": 70.0, "transfer": 4000.0}


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def save_model(tasks: dict[str, dict[str, Any]], path: Path) -> None:
    built = {name: build_task(name, **options) for name, options in tasks.items()}
    model = build_model(MODEL, built)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "step": 10}, path)


def save_cell(task: str, options: dict[str, Any], directory: Path) -> None:
    """A ``must transfer`` grid cell: its checkpoint and the part of ``cell.json`` the loader reads."""
    save_model({task: options}, directory / "checkpoint.pt")
    write_json(directory / "cell.json", {"task": task, "model": config_lib.to_dict(MODEL),
                                         "downstream": {"task_options": options, "image_size": 32}})


def best_record(init: str, task: str, value: float, mode: str = "finetune") -> dict[str, Any]:
    return {"init": init, "task": task, "metric": METRICS[task], "value": value, "val_value": value + 0.01,
            "lr": 0.1, "steps": 200, "mode": mode}


def write_transfer(run: Path) -> None:
    for mode, table in (("finetune", TRANSFER), ("linear", LINEAR)):
        for init, row in table.items():
            folder_init = init if mode == "finetune" else f"{init}_linear"
            for task, value in row.items():
                folder = run / "transfer" / folder_init / task
                write_json(folder / "best.json", best_record(init, task, value, mode))
                grid = [{**best_record(init, task, value - 0.05 * i, mode), "lr": 0.1 / 10**i}
                        for i in range(3)]
                write_jsonl(folder / "grid.jsonl", grid)


def write_teachers_and_student(run: Path) -> None:
    write_json(run / "teachers" / "classification" / "teacher.json",
               {"task": "classification", "metrics": {"top1": 0.8, "top5": 0.95}, "batch_size": 32})
    write_jsonl(run / "teachers" / "classification" / "metrics.jsonl",
                [{"step": s, "lr": 0.1, "loss": 2.0 / s, "loss/classification": 2.0 / s} for s in (1, 2, 3)]
                + [{"step": 3, "eval/classification/top1": 0.8, "eval/classification/top5": 0.95}])
    write_json(run / "teachers" / "detection" / "teacher.json", {"task": "detection", "metrics": {}})
    write_jsonl(run / "teachers" / "detection" / "metrics.jsonl",
                [{"step": 2, "loss": 1.0}, {"step": 2, "eval/detection/ap50_voc": 0.30},
                 {"step": 4, "loss": 0.5}, {"step": 4, "eval/detection/ap50_voc": 0.42}])
    student = run / "student"
    write_jsonl(student / "metrics.jsonl", [
        {"step": 5, "lr": 0.1, "loss": 3.0, "loss/classification": 1.0, "loss/detection": 2.0,
         "loss/detection/rpn_objectness": 0.5},
        {"step": 5, "eval/classification/top1": 0.70, "eval/detection/ap50_voc": 0.35},
        {"step": 10, "lr": 0.05, "loss": 2.0, "loss/classification": 0.7, "loss/detection": 1.3},
        {"step": 10, "eval/classification/top1": 0.75, "eval/detection/ap50_voc": 0.40,
         "eval/segmentation/miou": 0.5},
    ])
    with open(student / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 11, "loss": 1.0')  # a line cut short by a killed writer
    write_json(student / "student.json", {"tasks": STUDENT_TASKS, "model": config_lib.to_dict(MODEL),
                                          "image_size": IMAGE_SIZE, "batch_size": 8})
    save_model(STUDENT_TASKS, student / "checkpoint.pt")


def write_images(folder: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for index in range(count):
        array = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)  # not square: cropped
        (folder / "images" / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / "images" / f"class{index % 2}" / f"img-{index:03d}.png")


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete run: teachers, student, transfer (with a normals model), timings, images."""
    run = tmp_path_factory.mktemp("runs") / "fake"
    write_transfer(run)
    write_teachers_and_student(run)
    save_cell("normals", {}, run / "transfer" / "must" / "normals")
    write_json(run / "timings.json", TIMINGS)
    write_images(run / "data" / "pool" / "train", 3, seed=1)
    write_images(run / "data" / "transfer" / "test", 3, seed=2)
    return run


@dataclass(frozen=True)
class Expected:
    """The known numbers of the fake run."""

    transfer: dict = field(default_factory=lambda: TRANSFER)
    linear: dict = field(default_factory=lambda: LINEAR)
    metrics: dict = field(default_factory=lambda: METRICS)
    timings: dict = field(default_factory=lambda: TIMINGS)
    student_tasks: dict = field(default_factory=lambda: STUDENT_TASKS)
    model: ModelConfig = MODEL
    image_size: int = IMAGE_SIZE


@pytest.fixture(scope="session")
def expected() -> Expected:
    return Expected()


@pytest.fixture(scope="session")
def files() -> SimpleNamespace:
    """The writers above, for tests that build their own run (test modules cannot import conftest
    under ``--import-mode=importlib``)."""
    return SimpleNamespace(write_json=write_json, best_record=best_record, write_jsonl=write_jsonl, save_model=save_model, save_cell=save_cell,
                           write_images=write_images, write_teachers_and_student=write_teachers_and_student)


def write_lasso_checkpoint(path: Path) -> list[str]:
    """A pre-training checkpoint with a lasso: classification reads C2..C5, segmentation P2..P7."""
    from must.tasks.classification import ClassificationTask
    from must.tasks.segmentation import SegmentationTask
    from must.tasks.self_supervised.doersch import DoerschMultiTaskModel
    from must.train.checkpoint import save_atomically

    torch.manual_seed(0)
    tasks = [ClassificationTask(3), SegmentationTask(3, hidden_channels=8)]
    model = build_model(ModelConfig(backbone="resnet18", width=0.125, fpn_channels=8), {t.name: t for t in tasks})
    model = DoerschMultiTaskModel(model, 1e-3, harmonized=False)
    with torch.no_grad():
        model.pyramid_lasso.alpha[0, 3:] = 0.0  # segmentation drops P5..P7
    path.parent.mkdir(parents=True, exist_ok=True)
    save_atomically({"model": model.state_dict(), "model_record": model.record()}, path)
    return ["classification", "segmentation"]


@pytest.fixture(scope="session")
def lasso_checkpoint() -> Callable[[Path], list[str]]:
    """Writes a pre-training checkpoint with a lasso (classification reads C2..C5, segmentation
    P2..P7, its P5..P7 weights zero) and returns its row names."""
    return write_lasso_checkpoint
