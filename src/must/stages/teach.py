"""``must teach``: one single-task teacher on its own labeled data (MuST sec. 3.1).

The teacher is the student's architecture with one head, trained with the same augmentation
(scale jitter [0.5, 2.0]); it records the batch size and learning rate it used, which the MuST loss
rule reads later (sec. 3.3).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from must import config as config_lib
from must import distributed
from must.data.loader import make_eval_loader, make_loader
from must.data.readers import DatasetConfig, ReaderDataset, open_dataset
from must.models import ModelConfig, build_model
from must.tasks import Task, build_task
from must.predict.card import write_model_card
from must.teacher import TeacherRecord, save_record
from must.train import checkpoint as checkpoints
from must.train.config import TrainConfig
from must.train.engine import Evaluate, FitResult, evaluate_tasks, fit, resolve_precision


def demo_model() -> ModelConfig:
    """A narrow ResNet-18 FPN that trains in minutes on 2 CPU cores (widths 16..128)."""
    return ModelConfig(backbone="resnet18", width=0.25, fpn_channels=32)


@dataclass(frozen=True)
class TeachConfig:
    task: str = "classification"
    task_options: dict[str, Any] = field(default_factory=dict)
    """Extra task constructor options (class count and names come from the data)."""
    data: DatasetConfig | None = None
    """The labeled training set."""
    val: DatasetConfig | None = None
    """The validation set the teacher's metrics are measured on."""
    model: ModelConfig = field(default_factory=demo_model)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=300, batch_size=32, lr=0.05))
    image_size: int = 64
    scale_range: tuple[float, float] = (0.5, 2.0)
    """MuST sec. 3.4 / supp.: scale jitter [0.5, 2.0] for every teacher and the student."""
    eval_batch_size: int = 64


def task_options_from_data(task_name: str, dataset: ReaderDataset,
                           extra: Mapping[str, Any]) -> dict[str, Any]:
    """Class count and names for tasks that have classes, from the dataset; plus ``extra``."""
    options: dict[str, Any] = {}
    classes = dataset.classes.get(task_name)
    if classes:
        options.update(num_classes=len(classes), class_names=list(classes))
    options.update(extra)
    return options


def open_for_task(config: DatasetConfig, task_name: str) -> ReaderDataset:
    try:
        return open_dataset(dataclasses.replace(config, tasks=(task_name,)))
    except config_lib.ConfigError as error:  # say which dataset: a run may name several
        raise config_lib.ConfigError(f"{config.format} dataset {config.root}: {error}") from None


def final_evaluation(result: FitResult, evaluate: Evaluate | None) -> dict[str, float]:
    """The run's final scores; a rerun whose checkpoint was already final trains and evaluates
    nothing in ``fit``, so its model is scored here (else the records would lose their metrics)."""
    if result.evaluation or evaluate is None:
        return dict(result.evaluation)
    return dict(evaluate(result.ema if result.ema is not None else result.model, result.step))


def make_evaluator(task: Task, dataset: ReaderDataset | None, image_size: int, batch_size: int,
                   workers: int, device: torch.device, precision: str):
    """The engine's ``evaluate(model, step)`` over one labeled validation set."""
    if dataset is None:
        return None
    loader = make_eval_loader([dataset], {task.name: task}, batch_size, image_size, workers)
    resolved = resolve_precision(precision, device)

    def evaluate(model: nn.Module, step: int) -> dict[str, float]:
        results = evaluate_tasks(model, {task.name: task}, iter(loader), device, resolved)
        return {f"{task.name}/{name}": value for name, value in results.get(task.name, {}).items()}

    return evaluate


def run_teach(config: TeachConfig, out: Path) -> TeacherRecord:
    """Trains (or resumes) the teacher into ``out``; returns its record (also ``teacher.json``)."""
    if config.data is None:
        raise config_lib.ConfigError("teach: no training data given (data.format=... data.root=...)")
    train_set = open_for_task(config.data, config.task)  # bad data or options fail before anything is written
    val_set = open_for_task(config.val, config.task) if config.val else None
    options = task_options_from_data(config.task, train_set, config.task_options)
    task = build_task(config.task, **options)
    device = distributed.pick_device(config.train.device)
    distributed.setup(device)
    out.mkdir(parents=True, exist_ok=True)
    if distributed.is_main_process():
        config_lib.save(config, out / "config.yaml")
    checkpoints.seed_everything(config.train.seed)  # the same initial weights in every run
    model = build_model(config.model, {task.name: task}).to(device)

    def batches_from(first: int):
        return make_loader([train_set], {task.name: task}, config.train.micro_batch_size,
                           config.train.seed, config.image_size, start_step=first,
                           workers=config.train.workers, scale_range=config.scale_range, device=device)

    evaluate = make_evaluator(task, val_set, config.image_size, config.eval_batch_size,
                              config.train.workers, device, config.train.precision)
    result = fit(model, {task.name: task}, batches_from, config.train, out, evaluate=evaluate,
                 find_unused_parameters=None)  # every batch carries its one task
    prefix = f"{task.name}/"
    metrics = {k[len(prefix):]: v for k, v in final_evaluation(result, evaluate).items()
               if k.startswith(prefix)}
    record = TeacherRecord(task=task.name, task_options=options, model=config.model,
                           image_size=config.image_size, batch_size=config.train.batch_size,
                           learning_rate=config.train.lr, steps=config.train.steps, metrics=metrics)
    if distributed.is_main_process():
        save_record(record, out)
        write_model_card(out)
        metrics_file = out / "metrics.json"  # DESIGN.md's layout: the validation scores alone
        metrics_file.with_suffix(".tmp").write_text(json.dumps({task.name: metrics}, indent=2))
        metrics_file.with_suffix(".tmp").replace(metrics_file)
    return record
