"""``must train``: the multi-task student (MuST sec. 3.3-3.4; Noisy Student).

Several datasets are merged and sampled uniformly; each image carries the labels it really has and
the pseudo labels of every other task (``must label`` shards joined by key); an image without
either for a task contributes nothing to that task's loss. Losses are weighted by the MuST rule
from each teacher's recorded batch size and learning rate (or any other weighting of the engine).
Input noise (photometric RandAugment), dropout and stochastic depth make it a Noisy Student; the
finished student exports one teacher record per task, so ``must label`` can use it as the next
round's teacher.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from must import config as config_lib
from must import distributed
from must.data.loader import make_eval_loader, make_loader
from must.data.noise import PhotometricRandAugment
from must.data.readers import DatasetConfig, open_dataset, parse_dataset_spec
from must.label.teachers import TeacherRecord, read_record, save_record
from must.models import ModelConfig, build_model, demo_model
from must.models.records import StudentRecord, write_record
from must.predict.card import write_model_card
from must.tasks import TASK_BUILDERS, Task, build_tasks
from must.train import checkpoint as checkpoints
from must.train.config import TeacherRecipe, TrainConfig, WeightingConfig
from must.train.engine import evaluate_tasks, fit, resolve_precision
from must.train.evaluation import final_evaluation
from must.train.weighting import METHODS as WEIGHTING_METHODS



@dataclass(frozen=True)
class SourceConfig:
    """One dataset of the student's mix: its real labels (``data.tasks``) plus the pseudo labels
    of the ``must label`` outputs in ``pseudo`` (made from the same ``data``)."""

    data: DatasetConfig
    pseudo: tuple[str, ...] = ()
    labeled: bool = True
    """False: the source is the unlabeled pool of a semi-supervised task (see ``mu``)."""


@dataclass(frozen=True)
class RandAugmentConfig:
    num_ops: int = 2
    magnitude: int = 9


@dataclass(frozen=True)
class StudentConfig:
    sources: tuple[SourceConfig, ...] = ()
    teachers: tuple[str, ...] = ()
    """Teacher directories: the student's tasks, their options (classes) and MuST recipes."""
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Extra tasks or option overrides (e.g. ``classification: {dropout: 0.3}``); self-supervised
    tasks too (``simclr: {}``, ``fixmatch_classification: {threshold: 0.9}``), trained beside the
    real and pseudo labels in the same run (with the MuST rule give them a weight:
    ``train.weighting.weights.simclr=1.0``)."""
    val: dict[str, DatasetConfig] = field(default_factory=dict)
    """Per task, a validation set with real labels."""
    model: ModelConfig = field(default_factory=demo_model)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=600, batch_size=32, lr=0.05, weighting=WeightingConfig(method="must")))
    image_size: int = 64
    scale_range: tuple[float, float] = (0.5, 2.0)
    randaugment: RandAugmentConfig | None = None
    """Noisy Student's input noise; None = off."""
    eval_batch_size: int = 64
    mu: int | None = None
    """Unlabeled:labeled ratio of every batch for a semi-supervised task (FixMatch sec. 2.2, mu = 7):
    B / (1 + mu) images of the sources with ``labeled: true``, mu B / (1 + mu) of the others;
    None = every image of every source equally likely (MuST sec. 3.4)."""


def student_tasks(config: StudentConfig) -> tuple[dict[str, Task], dict[str, dict[str, Any]],
                                                  dict[str, TeacherRecord]]:
    """Tasks (and their options) from the teachers' records, refined by ``config.tasks``."""
    records = {}
    for directory in config.teachers:
        record = read_record(Path(directory))
        if record.task in records:
            raise config_lib.ConfigError(f"two teachers for task '{record.task}': {directory}")
        records[record.task] = record
    options = {name: dict(record.task_options) for name, record in records.items()}
    for name, extra in config.tasks.items():
        options[name] = {**options.get(name, {}), **extra}
    if not options:
        raise config_lib.ConfigError("train: no tasks: give teachers=[...] or tasks={...}")
    return build_tasks(options), options, records  # self-supervised tasks too


def weighting_with_teachers(train: TrainConfig, records: dict[str, TeacherRecord]) -> TrainConfig:
    """Fills the MuST rule's teacher recipes (b_it, lr_it) from the records where not given."""
    recipes = {name: TeacherRecipe(batch_size=r.batch_size, lr=r.learning_rate) for name, r in records.items()}
    recipes.update(train.weighting.teachers)
    weighting = dataclasses.replace(train.weighting, teachers=recipes)
    return dataclasses.replace(train, weighting=weighting)


def resolved_config(config: StudentConfig) -> StudentConfig:
    """``config`` with the MuST rule's teacher recipes filled in from the teachers' records: what
    ``run_student`` saves as ``config.yaml``, so what a finished run is compared with."""
    records = {record.task: record for record in (read_record(Path(d)) for d in config.teachers)}
    return dataclasses.replace(config, train=weighting_with_teachers(config.train, records))


def open_sources(config: StudentConfig):
    from must.label.dataset import PseudoLabels, WithPseudoLabels

    datasets = []
    for source in config.sources:
        dataset = open_dataset(source.data)
        if source.pseudo:
            dataset = WithPseudoLabels(dataset, [PseudoLabels(Path(p)) for p in source.pseudo])
        datasets.append(dataset)
    if not datasets:
        raise config_lib.ConfigError("train: no data: give sources=[{data: {...}, pseudo: [...]}]")
    return datasets


def batch_groups(config: StudentConfig, batch_size: int) -> list[tuple[list[int], int]] | None:
    """The sources' shares of a batch of ``batch_size`` under ``mu`` (labeled first), or None."""
    if config.mu is None:
        return None
    labeled = [index for index, source in enumerate(config.sources) if source.labeled]
    unlabeled = [index for index, source in enumerate(config.sources) if not source.labeled]
    if config.mu < 1 or not labeled or not unlabeled:
        raise config_lib.ConfigError(f"mu={config.mu} needs mu >= 1 and sources with labeled: true and "
                                     "with labeled: false")
    if batch_size % (1 + config.mu):
        raise config_lib.ConfigError(f"train.batch_size / train.accumulate = {batch_size} is not divisible by "
                                     f"1 + mu = {1 + config.mu} (B labeled + mu B unlabeled images)")
    share = batch_size // (1 + config.mu)
    return [(labeled, share), (unlabeled, batch_size - share)]


def every_image_has_every_task(config: StudentConfig, tasks: dict[str, Task]) -> bool:
    """Whether every image of every source carries a label of every task: each source's pseudo
    labels cover every task and skipped no image. Otherwise a batch may lack a task (MuST sec. 3.4)
    and leave its head without a gradient. Self-supervised tasks count as partial (a pseudo-label
    threshold or a confidence mask may leave them without a loss)."""
    from must.label.manifest import read_manifest

    if any(name not in TASK_BUILDERS for name in tasks):
        return False
    for source in config.sources:
        manifests = [read_manifest(Path(directory)) for directory in source.pseudo]
        covered = {task for manifest in manifests if not manifest.skipped for task in manifest.tasks}
        if not set(tasks) <= covered:
            return False
    return True


def make_multi_evaluator(tasks: dict[str, Task], val: dict[str, DatasetConfig], config: StudentConfig,
                         device) -> Any:
    """Evaluates each task on its own validation set (real labels only)."""
    loaders = {}
    for name, dataset_config in val.items():
        if name not in tasks:
            raise config_lib.ConfigError(f"val.{name}: the student has no task '{name}'")
        dataset = open_dataset(dataclasses.replace(dataset_config, tasks=(name,)))
        loaders[name] = make_eval_loader([dataset], {name: tasks[name]}, config.eval_batch_size,
                                         config.image_size, config.train.workers)
    if not loaders:
        return None
    precision = resolve_precision(config.train.precision, device)

    def evaluate(model, step: int) -> dict[str, float]:
        results = {}
        for name, loader in loaders.items():
            scores = evaluate_tasks(model, {name: tasks[name]}, iter(loader), device, precision)
            results.update({f"{name}/{k}": v for k, v in scores.get(name, {}).items()})
        return results

    return evaluate


def launch_student(config: StudentConfig, out: Path, processes: int = 1) -> None:
    """``run_student`` in ``processes`` DDP processes (``must train`` under torchrun, the cores or
    GPUs split among them: :func:`must.distributed.launch`), for a caller that is not distributed
    itself (``must demo``); 1 = in this process. Several one-thread processes use a CPU's cores
    better than one process of as many threads (``benchmarks/ddp.py``)."""
    processes = distributed.process_count(processes)
    if processes <= 1:
        run_student(config, out)
        return
    out.mkdir(parents=True, exist_ok=True)
    config_lib.save(config, out / "launch.yaml")
    distributed.launch(["train", "--config", str(out / "launch.yaml"), "--out", str(out)], processes)


def run_student(config: StudentConfig, out: Path) -> dict[str, dict[str, float]]:
    """Trains (or resumes) the student into ``out``; returns its validation metrics per task."""
    device = distributed.pick_device(config.train.device)
    distributed.setup(device)
    out.mkdir(parents=True, exist_ok=True)
    tasks, options, records = student_tasks(config)
    train_config = weighting_with_teachers(config.train, records)
    if distributed.is_main_process():
        config_lib.save(dataclasses.replace(config, train=train_config), out / "config.yaml")
    datasets = open_sources(config)
    checkpoints.seed_everything(train_config.seed)  # the same initial weights in every run
    model = build_model(config.model, tasks).to(device)
    noise = PhotometricRandAugment(**dataclasses.asdict(config.randaugment)) if config.randaugment else None

    groups = batch_groups(config, train_config.micro_batch_size)

    def batches_from(first: int):
        return make_loader(datasets, tasks, train_config.micro_batch_size, train_config.seed,
                           config.image_size, start_step=first, workers=train_config.workers,
                           scale_range=config.scale_range, device=device, image_noise=noise,
                           groups=groups)

    evaluate = make_multi_evaluator(tasks, config.val, config, device)
    result = fit(model, tasks, batches_from, train_config, out, evaluate=evaluate,
                 find_unused_parameters=None if every_image_has_every_task(config, tasks) else True)
    metrics: dict[str, dict[str, float]] = {}
    for key, value in final_evaluation(result, evaluate).items():
        task, _, metric = key.partition("/")
        metrics.setdefault(task, {})[metric] = value
    if distributed.is_main_process():
        write_student_record(out, options, config, train_config, metrics)
        write_model_card(out)
    return metrics


def announce_student(out: Path, metrics: dict[str, dict[str, float]]) -> None:
    """What ``must train`` prints when it finishes, from the main process only (every rank returns
    the same metrics): where the checkpoint and the per-task teacher records went, and the
    validation metrics or that there are none."""
    if not distributed.from_environment().is_main:
        return
    exported = sorted(p.name for p in (out / "as_teacher").iterdir()) if (out / "as_teacher").is_dir() else []
    print(f"student -> {out}: checkpoint {out / 'checkpoint.pt'}", flush=True)
    if exported:
        print(f"teacher records for the next round (must label --teacher DIR): {out / 'as_teacher'}/"
              f"{{{','.join(exported)}}}", flush=True)
    for task, values in metrics.items():
        print(f"student {task}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items()), flush=True)
    if not metrics:
        print("no validation set given (--val TASK=FORMAT:ROOT or val.TASK in the config), so no "
              "metrics", flush=True)


def write_student_record(out: Path, options: dict[str, dict[str, Any]], config: StudentConfig,
                         train: TrainConfig, metrics: dict[str, dict[str, float]]) -> None:
    """``student.json`` (tasks, model, image size, metrics) and one teacher record per task under
    ``as_teacher/<task>/`` pointing at the student's checkpoint (the next Noisy Student round)."""
    write_record(StudentRecord(tasks=options, model=config.model, image_size=config.image_size,
                               batch_size=train.batch_size, learning_rate=train.lr, steps=train.steps,
                               metrics=metrics), out)
    for name, task_options in options.items():
        if name not in TASK_BUILDERS:  # a self-supervised head labels nothing: no teacher record
            continue
        save_record(TeacherRecord(task=name, task_options=task_options,
                                  model=dataclasses.replace(config.model, init=None),
                                  image_size=config.image_size, batch_size=train.batch_size,
                                  learning_rate=train.lr, steps=train.steps, metrics=metrics.get(name, {}),
                                  checkpoint="../../checkpoint.pt"), out / "as_teacher" / name)


SUMMARY = "train the multi-task student (sec. 3.3-3.4)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train the multi-task student (MuST sec. 3.3-3.4) on datasets carrying real labels and the "
        "pseudo labels of `must label`, with the MuST loss weights from the teachers' recorded batch "
        "sizes and learning rates. Noisy Student options: randaugment.num_ops=2, "
        "model.drop_path_rate=0.2, tasks.classification.dropout=0.3. Several datasets: put "
        "`sources: [{data: {...}, pseudo: [...]}, ...]` in a --config YAML. Loss weighting, "
        f"train.weighting.method=: {', '.join(WEIGHTING_METHODS)}.")
    parser.add_argument("--teacher", action="append", default=[], metavar="DIR",
                        help="a teacher directory (repeat): the student's tasks and loss weights")
    parser.add_argument("--data", metavar="FORMAT:ROOT", help="the (unlabeled) image set that was labeled")
    parser.add_argument("--pseudo", action="append", default=[], metavar="DIR",
                        help="a `must label` output for --data (repeat)")
    parser.add_argument("--val", action="append", default=[], metavar="TASK=FORMAT:ROOT",
                        help="validation data with real labels for a task (repeat)")
    parser.add_argument("--init", metavar="CHECKPOINT", help="start from a checkpoint (ours, torchvision or timm)")
    parser.add_argument("--out", required=True, type=Path, help="output directory, e.g. runs/x/student")
    config_lib.add_config_arguments(parser, StudentConfig, "student", "train.steps=200 model.width=0.5")


def with_flags(args: argparse.Namespace) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The flags of ``must train`` put into a preset's data: teachers replace the preset's,
    ``--data`` / ``--pseudo`` add a source, ``--val`` sets a task's validation set."""
    def update(data: dict[str, Any]) -> dict[str, Any]:
        if args.teacher:
            data["teachers"] = [str(Path(t)) for t in args.teacher]
        if args.data:
            source = {"data": parse_dataset_spec(args.data, "--data"), "pseudo": list(args.pseudo)}
            data["sources"] = [*data.get("sources", []), source]
        for item in args.val:
            task, _, dataset = item.partition("=")
            if not task:
                raise config_lib.ConfigError(f"--val expects TASK=FORMAT:ROOT, got '{item}'")
            data.setdefault("val", {})[task] = parse_dataset_spec(dataset, "--val")
        if args.init:
            data.setdefault("model", {})["init"] = args.init
        return data
    return update


def run(args: argparse.Namespace) -> int:
    config = config_lib.load(StudentConfig, args.config, args.overrides, section="student",
                             flags=with_flags(args))
    announce_student(args.out, run_student(config, args.out))
    return 0
