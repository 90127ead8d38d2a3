"""Each stage's own config, assembled from the demo's :class:`~must.stages.demo.config.DemoConfig`
and the run directory: the teachers' datasets (their world domains unless a plan names others),
the images to label, the student and its comparison variants (MuST Tables 3 and 5), the
pre-trainings, and the transfer rows and grid (sec. 3.5, supp. sec. 2.3). The demo-wide
``precision`` and ``device`` override each stage's own.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from must import config as config_lib
from must import distributed
from must.data.readers import DatasetConfig
from must.label.labeler import LabelConfig
from must.stages.demo.config import TEACHER_DOMAINS, DemoConfig, StudentVariant, TransferPlan
from must.stages.pretrain import PretrainConfig
from must.stages.student import SourceConfig, StudentConfig
from must.stages.teach import TeachConfig
from must.train.config import TrainConfig
from must.train.engine import resolve_precision
from must.transfer.config import DownstreamTask


def world_set(root: Path, domain: str, split: str, tasks: tuple[str, ...] = ()) -> DatasetConfig:
    return DatasetConfig(format="world", root=str(root / domain / split), tasks=tasks)


def with_overrides(config: DemoConfig, train: TrainConfig) -> TrainConfig:
    """A stage's training settings with the demo's ``precision`` and ``device`` where they are set."""
    changes = {name: getattr(config, name) for name in ("precision", "device") if getattr(config, name) != "auto"}
    return dataclasses.replace(train, **changes) if changes else train


def warn_about_precision(config: DemoConfig) -> None:
    """Resolves every training stage's precision in the demo's own process first, so a warning
    about it (bf16 on CPU) is shown once, not again by each process the stages start."""
    trains = [*(plan.train for plan in config.teachers.values()), config.student.train,
              *(plan.train for plan in config.pretrain.values())]
    for train in trains:
        resolved = with_overrides(config, train)
        resolve_precision(resolved.precision, distributed.pick_device(resolved.device))
    resolve_precision(config.precision, distributed.pick_device(config.device))  # the transfer cells'


def teacher_sets(config: DemoConfig, data: Path, task: str) -> tuple[DatasetConfig, DatasetConfig]:
    """The teacher's (train, val) datasets: the plan's, else its world domain's."""
    plan = config.teachers[task]
    if task not in TEACHER_DOMAINS and (plan.data is None or plan.val is None):
        raise config_lib.ConfigError(f"teachers.{task}: no world domain for this task; give data and val")
    domain = TEACHER_DOMAINS.get(task, "")
    return (plan.data or world_set(data, domain, "train"), plan.val or world_set(data, domain, "val"))


def teach_configs(config: DemoConfig, data: Path) -> dict[str, TeachConfig]:
    configs = {}
    for task, plan in config.teachers.items():
        train, val = teacher_sets(config, data, task)
        settings = with_overrides(config, plan.train)
        if config.teacher_workers > 1:  # several bars at once would garble each other
            settings = dataclasses.replace(settings, progress=False)
        configs[task] = TeachConfig(task=task, task_options=plan.task_options, data=train, val=val,
                                    model=config.model, train=settings,
                                    image_size=plan.image_size or config.image_size)
    return configs


def pool_set(config: DemoConfig, data: Path) -> DatasetConfig:
    return config.pool or DatasetConfig(format="folder", root=str(data / "pool" / "train" / "images"))


def student_config(config: DemoConfig, run: Path, variant: StudentVariant = StudentVariant()) -> StudentConfig:
    """The main student (``variant`` default: every teacher, the pool's pseudo labels) or a
    comparison variant."""
    data = run / "data"
    tasks = variant.tasks or tuple(config.teachers)
    unknown = [task for task in tasks if task not in config.teachers]
    if unknown:
        raise config_lib.ConfigError(f"students: unknown task(s) {unknown}; teachers: {', '.join(config.teachers)}")
    sources = []
    if variant.pool:
        images = dataclasses.replace(pool_set(config, data), limit=variant.pool_images)
        sources.append(SourceConfig(data=images, pseudo=(str(run / "pseudo" / "pool"),)))
    if variant.labeled:
        for task in tasks:
            train = dataclasses.replace(teacher_sets(config, data, task)[0], tasks=(task,))
            pseudo = (str(run / "pseudo" / f"labeled_{task}"),) if variant.pseudo_on_labeled else ()
            sources.append(SourceConfig(data=train, pseudo=pseudo))
    train = with_overrides(config, config.student.train)
    if variant.weighting is not None:
        train = dataclasses.replace(train, weighting=dataclasses.replace(train.weighting, method=variant.weighting))
    return StudentConfig(
        sources=tuple(sources), teachers=tuple(str(run / "teachers" / task) for task in tasks),
        tasks={name: extra for name, extra in config.student.tasks.items() if name in tasks},
        val={task: teacher_sets(config, data, task)[1] for task in tasks},
        model=config.model, train=train,
        image_size=config.image_size, randaugment=config.student.randaugment)


def label_config(config: DemoConfig, run: Path, images: DatasetConfig) -> LabelConfig:
    return LabelConfig(teachers=tuple(str(run / "teachers" / t) for t in config.teachers), data=images,
                       batch_size=config.label.batch_size, workers=config.label.workers,
                       thresholds=config.label.thresholds, device=config.device)


def video_set(config: DemoConfig, data: Path, plan: PretrainConfig) -> tuple[DatasetConfig, ...]:
    """A pre-training's further image sets: motion segmentation's frames are the world's ``video``
    clips (Doersch & Zisserman sec. 2), mixed with the pool, when the plan trains it."""
    if "motion_segmentation" not in plan.task_names or "video" not in config.world.splits:
        return plan.more_data
    return (*plan.more_data, DatasetConfig(format="video", root=str(data / "video" / "train")))


def pretrain_config(config: DemoConfig, run: Path, name: str) -> PretrainConfig:
    """Pre-training ``name`` on the pool with the demo's model (with the row's changes, ``rows``)."""
    plan = config.pretrain[name]
    return dataclasses.replace(plan, data=pool_set(config, run / "data"),
                               more_data=video_set(config, run / "data", plan), model=config.row_model(name),
                               image_size=config.image_size, train=with_overrides(config, plan.train))


def transfer_inits(config: DemoConfig, run: Path) -> dict[str, str | None]:
    known: dict[str, str | None] = {
        "scratch": None, "supervised": str(run / "teachers" / "classification" / "checkpoint.pt"),
        "must": str(run / "student" / "checkpoint.pt")}
    known.update({f"teacher_{task}": str(run / "teachers" / task / "checkpoint.pt") for task in config.teachers})
    known.update({name: str(run / "students" / name / "checkpoint.pt") for name in config.students})
    known.update({name: str(run / "pretrain" / name / "checkpoint.pt") for name in config.pretrain})
    known.update({name: None for name in config.transfer.inits if name.startswith("scratch_")})
    unknown = [name for name in config.transfer.inits if name not in known]
    if unknown:
        raise config_lib.ConfigError(f"transfer.inits: unknown {unknown}; choose from {', '.join(known)} "
                                     "or scratch_<name> (another from-scratch row, e.g. with its own rows.<name>)")
    return {name: known[name] for name in config.transfer.inits}


def with_grid(plan: TransferPlan, suite: dict[str, DownstreamTask]) -> dict[str, DownstreamTask]:
    """Widens each task's grid by the plan's learning-rate and step factors."""
    return {name: dataclasses.replace(
        task, lrs=tuple(dict.fromkeys(round(lr * f, 6) for lr in task.lrs for f in plan.lr_factors)),
        steps=tuple(dict.fromkeys(max(1, round(steps * f)) for steps in task.steps for f in plan.step_factors)))
        for name, task in suite.items()}
