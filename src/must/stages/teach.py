"""``must teach``: one single-task teacher on its own labeled data (MuST sec. 3.1).

The teacher is the student's architecture with one head, trained with the same augmentation
(scale jitter [0.5, 2.0]); it records the batch size and learning rate it used, which the MuST loss
rule reads later (sec. 3.3).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from must import config as config_lib
from must import distributed
from must.data.loader import make_loader
from must.data.readers import FORMATS, DatasetConfig, open_for_task, parse_dataset_spec
from must.files import write_atomic
from must.label.teachers import TeacherRecord, save_record
from must.models import ModelConfig, build_model, demo_model
from must.predict.card import write_model_card
from must.tasks import TASK_BUILDERS, build_task, task_options_from_data
from must.train import checkpoint as checkpoints
from must.train.config import TrainConfig
from must.train.engine import fit
from must.train.evaluation import final_evaluation, make_evaluator


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
        write_atomic(out / "metrics.json", json.dumps({task.name: metrics}, indent=2))  # the scores alone
    return record


SUMMARY = "train a single-task teacher (MuST sec. 3.1)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train a single-task teacher on a labeled dataset (MuST sec. 3.1): the student's ResNet-FPN "
        "with one head, scale jitter [0.5, 2.0]. Writes checkpoint.pt, teacher.json (metrics, batch "
        "size, learning rate), metrics.jsonl, events/ and config.yaml into --out. Resumes from "
        "--out/checkpoint.pt when present.")
    parser.epilog = f"dataset formats: {', '.join(sorted(FORMATS))}"
    parser.add_argument("--task", required=True, choices=sorted(TASK_BUILDERS))
    parser.add_argument("--data", metavar="FORMAT:ROOT", help="training data, e.g. world:DIR, imagefolder:DIR")
    parser.add_argument("--val", metavar="FORMAT:ROOT", help="validation data (same forms as --data)")
    parser.add_argument("--out", required=True, type=Path, help="output directory, e.g. runs/x/teachers/TASK")
    config_lib.add_config_arguments(parser, TeachConfig, "teach", "train.steps=200 model.width=0.5")


def dataset_overrides(flag: str, key: str, value: str | None) -> list[str]:
    """``--data FORMAT:ROOT`` -> ``data.format=FORMAT data.root=ROOT``."""
    if value is None:
        return []
    return [f"{key}.{name}={item}" for name, item in parse_dataset_spec(value, flag).items()]


def run(args: argparse.Namespace) -> int:
    overrides = [f"task={args.task}", *dataset_overrides("--data", "data", args.data),
                 *dataset_overrides("--val", "val", args.val), *args.overrides]
    config = config_lib.load(TeachConfig, args.config, overrides, section="teach")
    record = run_teach(config, args.out)
    if distributed.from_environment().is_main:  # under torchrun every rank returns the same record
        print(f"teacher '{record.task}' -> {args.out}: " +
              ", ".join(f"{k}={v:.4f}" for k, v in record.metrics.items()))
    return 0
