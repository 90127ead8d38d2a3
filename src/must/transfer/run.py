"""``must transfer``: fine-tune a checkpoint on every downstream task, one grid search per task
(MuST sec. 3.5, supplementary sec. 2.3), or probe it with its trunk frozen.

Per grid cell: backbone + FPN from the checkpoint (or random, from scratch), a new randomly
initialized head, ``steps`` steps of SGD with cosine decay and weight decay 1e-4 through the one
training engine, then the task's primary metric on the validation and on the test split. The best
cell per task is chosen by validation score only; its test score is what the results table shows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from must import config as config_lib
from must import distributed
from must.data.loader import make_loader
from must.data.readers import ReaderDataset, open_for_task
from must.files import CHECKPOINT_NAME, file_sha256, write_atomic
from must.data.sample import Batch
from must.models import MultiTaskModel, build_model
from must.models.weights import read_checkpoint_record
from must.tasks import Task, build_task, check_task_options, task_options_from_data
from must.tasks.self_supervised.doersch import DoerschMultiTaskModel
from must.train import checkpoint as checkpoints
from must.train.engine import fit
from must.train.evaluation import make_evaluator
from must.transfer.config import DownstreamTask, TransferConfig
from must.transfer.grid import (RESULT_NAME, Cell, check_identity, for_rank, grid_cells,
                                json_text, read_result, write_grid)
from must.transfer.holdout import hold_out
from must.transfer.probe import freeze_trunk

NOT_IN_IDENTITY = ("lrs", "steps", "checkpoint_every", "eval_batch_size", "substitutes")
"""Downstream settings that do not change a cell's result (a grid may grow without retraining)."""
OMITTED_WHEN_EMPTY = ("more_train",)
"""Settings left out of a cell's identity when empty, so cells trained before they existed stay valid."""


def open_splits(spec: DownstreamTask, seed: int) -> tuple[list[ReaderDataset], ReaderDataset, ReaderDataset]:
    """``(train sets, val, test)``: ``train`` then ``more_train``; without a ``val`` set, val is
    held out of ``train`` by ``seed``."""
    train = open_for_task(spec.train, spec.task)
    more = [open_for_task(config, spec.task) for config in spec.more_train]
    for config, dataset in zip(spec.more_train, more):
        if dataset.classes.get(spec.task) != train.classes.get(spec.task):
            raise config_lib.ConfigError(f"more_train {config.format}:{config.root}: its {spec.task} "
                                         f"classes differ from those of train {spec.train.root}")
    if spec.val is None:
        train, val = hold_out(train, spec.val_fraction, seed, spec.val_limit)
    else:
        val = open_for_task(spec.val, spec.task)
    return [train, *more], val, open_for_task(spec.test, spec.task)


def build_transfer_model(config: TransferConfig, task: Task) -> MultiTaskModel:
    """Backbone + FPN from ``config.init`` (ours: backbone + FPN; torchvision / timm: the backbone;
    None: random) and a new randomly initialized head for ``task`` (MuST supp. sec. 2.3: "we
    initialize the parameters in the ResNet and FPN backbone with a pre-trained model and randomly
    initialize the rest of the layers"). Seeded: every cell of a task starts from the same head.
    The trunk is fed the input transform of :func:`resolve_input_transform` (a harmonized
    pre-training is fine-tuned on the lightness images it learned from, Doersch & Zisserman sec. 4.3)."""
    checkpoints.seed_everything(config.seed)
    model_config = config_lib.replace(config.model, init=config.init, init_heads=False)
    model = build_model(model_config, {task.name: task})
    if resolve_input_transform(config) == "harmonized":
        return DoerschMultiTaskModel(model, lasso_weight=None, harmonized=True)
    return model


def resolve_input_transform(config: TransferConfig) -> str:
    """``config.input_transform``, or for ``auto`` the one ``config.init``'s checkpoint records
    (``rgb`` without a record: older checkpoints, torchvision / timm files, from scratch)."""
    if config.input_transform != "auto":
        return config.input_transform
    if config.init is None:
        return "rgb"
    return str(read_checkpoint_record(config.init).get("input_transform", "rgb"))


def cell_identity(config: TransferConfig, cell: Cell, init_sha256: str | None) -> dict[str, Any]:
    """Everything a cell's result depends on (written to ``cell.json``, checked on reruns)."""
    spec = config_lib.to_dict(config.tasks[cell.task])
    return {
        "init": config.init, "init_sha256": init_sha256, "init_name": config.init_name,
        "task": cell.task, "lr": cell.lr, "steps": cell.steps, "mode": cell.mode,
        "downstream": {key: value for key, value in spec.items()
                       if key not in NOT_IN_IDENTITY and not (key in OMITTED_WHEN_EMPTY and not value)},
        "model": config_lib.to_dict(config_lib.replace(config.model, init=None)),
        "seed": config.seed, "precision": config.precision,
        # Only when not RGB, so cells trained before the transform was recorded stay valid.
        **({"input_transform": config.input_transform} if config.input_transform != "rgb" else {}),
    }


@contextlib.contextmanager
def single_process() -> Iterator[None]:
    """Makes the engine see one process even under torchrun: grid cells are independent runs,
    not one data-parallel run, so no rank may join a process group for them."""
    saved = {name: os.environ.get(name) for name in ("RANK", "WORLD_SIZE")}
    os.environ.update(RANK="0", WORLD_SIZE="1")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def train_cell(config: TransferConfig, root: Path, init_sha256: str | None, progress: bool,
               cell: Cell) -> dict[str, Any]:
    """Trains (or resumes, or skips when finished) one grid cell; returns its grid line."""
    directory = cell.directory(root / cell.task)
    check_identity(directory, cell_identity(config, cell, init_sha256))
    finished = read_result(directory)
    if finished is not None:
        return finished
    start = time.perf_counter()
    spec = config.tasks[cell.task]
    with single_process():
        train_sets, val_set, test_set = open_splits(spec, config.seed)
        task = build_task(spec.task, **task_options_from_data(spec.task, train_sets[0], spec.task_options))
        model = build_transfer_model(config, task)
        if cell.mode == "linear":
            freeze_trunk(model)
        train_config = spec.train_config(cell.lr, cell.steps, config.seed, config.device,
                                          config.precision, progress)
        device = distributed.pick_device(config.device)
        tasks = {task.name: task}

        def batches_from(first: int) -> Iterator[Batch]:
            return make_loader(train_sets, tasks, train_config.micro_batch_size, train_config.seed,
                               spec.image_size, start_step=first, workers=config.data_workers,
                               scale_range=spec.scale_range, flip=spec.flip, device=device)

        result = fit(model, tasks, batches_from, train_config, directory)
        trained = result.ema if result.ema is not None else result.model
        scores = {}
        for split, dataset in (("val", val_set), ("test", test_set)):
            evaluate = make_evaluator(task, dataset, spec.image_size, spec.eval_batch_size,
                                      config.data_workers, device, config.precision)
            scores[split] = evaluate(trained, result.step)
    key = f"{task.name}/{task.primary_metric}"
    record = {
        "init": config.init_name, "task": cell.task, "metric": task.primary_metric, "lr": cell.lr,
        "steps": cell.steps, "mode": cell.mode, "val_value": scores["val"].get(key, float("nan")),
        "value": scores["test"].get(key, float("nan")), "seconds": round(time.perf_counter() - start, 2),
        "val_metrics": _strip(scores["val"], task.name), "test_metrics": _strip(scores["test"], task.name),
        "dataset": spec.train.format,
    }
    if spec.substitutes is not None:  # the column measures other data than its name says
        record["substitutes"] = spec.substitutes
    write_atomic(directory / RESULT_NAME, json_text(record))
    if not config.keep_checkpoints:
        (directory / CHECKPOINT_NAME).unlink(missing_ok=True)
    return record


def _strip(metrics: dict[str, float], task_name: str) -> dict[str, float]:
    prefix = f"{task_name}/"
    return {name[len(prefix):]: value for name, value in metrics.items() if name.startswith(prefix)}


def _announce(config: TransferConfig, cell: Cell, record: dict[str, Any]) -> None:
    print(f"transfer {config.init_name}/{cell.task} {cell.directory_name}: "
          f"val {record['metric']}={record['val_value']:.4f} test={record['value']:.4f} "
          f"({record['seconds']:.0f} s)", flush=True)


def run_transfer(config: TransferConfig, out: str | Path) -> dict[str, dict[str, Any]]:
    """Runs every cell of every task into ``<out>/transfer/<init_name>/`` (finished cells are
    skipped, interrupted ones resume) and writes ``grid.jsonl`` and the best file of each task
    whose cells are all done. Returns ``{task: best line}`` for those tasks.

    Under torchrun rank ``r`` trains cells ``r, r + N, ...``; whichever rank finds a task's last
    cell finished writes its grid (the same bytes whoever writes them).
    """
    return run_transfers([config], out)[config.init_name]


def run_transfers(configs: Sequence[TransferConfig], out: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """:func:`run_transfer` for several pre-trainings at once: their cells share one pool of
    ``configs[0].workers`` processes, submitted task by task across the inits, so no worker waits
    for another init's last cell. Returns ``{init_name: {task: best line}}``."""
    names = [config.init_name for config in configs]
    if len(set(names)) != len(names):
        raise config_lib.ConfigError(f"transfer: init names must differ, got {names}")
    info = distributed.from_environment()
    plans = [_plan(config, Path(out), info) for config in configs]
    tasks = list(dict.fromkeys(cell.task for plan in plans for cell in plan.cells))
    jobs = [(index, cell) for task in tasks for index, plan in enumerate(plans)
            for cell in plan.cells if cell.task == task]
    distributed.run_pool(for_rank(jobs, info.rank, info.world_size),
                         functools.partial(_train_job, [plan.train for plan in plans]), configs[0].workers,
                         on_done=lambda job, record: _announce(plans[job[0]].config, job[1], record))
    return {plan.config.init_name: _write_grids(plan) for plan in plans}


@dataclasses.dataclass(frozen=True)
class _Plan:
    config: TransferConfig
    root: Path
    cells: list[Cell]
    train: Callable[[Cell], dict[str, Any]]


def _plan(config: TransferConfig, out: Path, info: distributed.ProcessInfo) -> _Plan:
    if not config.tasks:
        raise config_lib.ConfigError("transfer: no downstream tasks configured")
    if config.init is not None and not Path(config.init).is_file():
        raise FileNotFoundError(f"transfer: init checkpoint {config.init} not found")
    for spec in config.tasks.values():  # a bad option fails before any cell trains
        check_task_options(spec.task, spec.task_options)
    config = config_lib.replace(config, device=str(distributed.pick_device(config.device)),
                                input_transform=resolve_input_transform(config))
    root = out / "transfer" / config.init_name
    if info.is_main:
        config_lib.save(config, root / f"config_{config.mode}.yaml")
    init_sha256 = file_sha256(Path(config.init)) if config.init is not None else None
    cells = _cells(config)
    progress = config.progress and config.workers == 1 and info.is_main
    return _Plan(config, root, cells, functools.partial(train_cell, config, root, init_sha256, progress))


def _cells(config: TransferConfig) -> list[Cell]:
    return [cell for name, spec in config.tasks.items() for cell in grid_cells(name, spec.lrs, spec.steps, config.mode)]


def all_finished(configs: Sequence[TransferConfig], out: str | Path) -> bool:
    """Whether every grid cell of every config has its result (a rerun would only read them)."""
    return all(read_result(cell.directory(Path(out) / "transfer" / config.init_name / cell.task)) is not None
               for config in configs for cell in _cells(config))


def _train_job(trains: Sequence[Callable[[Cell], dict[str, Any]]], job: tuple[int, Cell]) -> dict[str, Any]:
    index, cell = job
    return trains[index](cell)


def _write_grids(plan: _Plan) -> dict[str, dict[str, Any]]:
    """The grid and best file of each task whose cells have all finished."""
    bests: dict[str, dict[str, Any]] = {}
    for name in plan.config.tasks:
        records = [read_result(cell.directory(plan.root / name)) for cell in plan.cells if cell.task == name]
        if all(record is not None for record in records):
            bests[name] = write_grid(plan.root / name, records, plan.config.mode)  # type: ignore[arg-type]
    return bests
