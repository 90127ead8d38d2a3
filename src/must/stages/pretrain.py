"""``must pretrain``: self-supervised pre-training of the ResNet-FPN trunk on unlabeled images
(the "self-supervised pre-training (SimCLR)" row of the paper's comparisons).

One method trains one pretext head on the shared trunk through the one training engine: SimCLR,
BYOL, MoCo, DINO, Barlow Twins, VICReg, SimSiam, MAE (a ViT trunk only), PIRL, rotation, jigsaw,
relative position, colorization, exemplar or motion segmentation (their
tasks live in :mod:`must.tasks.self_supervised`; the loader makes their views of every image;
motion segmentation learns from the frames of video clips and their motion masks, ``video:DIR``). ``multi`` is
Doersch & Zisserman 2017 ("Multi-task Self-Supervised Visual Learning"): several pretext heads on
one trunk (sec. 3), trained by alternating, one head per iteration with the gradients of a whole
cycle accumulated before each update (:class:`~must.tasks.self_supervised.doersch.AlternateSchedule`,
D2), or jointly, every head on every batch; optionally with the lasso (sec. 4.2, D3: every head
reads its own learned, L1-penalized mixture of C2..C5) and harmonized inputs (sec. 4.3, D4: Lab
lightness, replicated).

The output is the engine's ``checkpoint.pt`` in the :class:`~must.models.MultiTaskModel` layout
(``backbone.*``, ``fpn.*``, ``heads.*``; ``lasso.*`` with the lasso), so
``ModelConfig(init=...)`` / ``must transfer --init`` loads backbone + FPN from it and drops the
pretext heads; plus ``pretrain.json`` (method, task options, model, recipe, last losses).

    must pretrain --method simclr --data folder:/data/unlabeled --out runs/x/pretrain/simclr
    must pretrain --method multi --data world:runs/demo/data/pool/train --out runs/x/pretrain/multi \\
        schedule=joint lasso=0.001 harmonize=true tasks=[relative_position,colorization,exemplar]
    torchrun --nproc_per_node=4 -m must.cli pretrain ...      # DDP

Rerunning the same command resumes from ``--out/checkpoint.pt``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import textwrap
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from must import config as config_lib
from must import distributed
from must.data.loader import make_loader
from must.data.readers import DatasetConfig, open_dataset, parse_dataset_spec
from must.data.sample import Batch
from must.models import ModelConfig, MultiTaskModel, build_model, demo_model
from must.models.lasso import read_lasso_matrix
from must.models import records as model_records
from must.models.records import PRETRAIN_RECORD, PretrainRecord
from must.tasks import construct, pretext_builders
from must.tasks.self_supervised import SelfSupervisedTask
from must.tasks.self_supervised.doersch import (DoerschMultiTaskModel, Schedule, ScheduledWeighting,
                                                build_schedule)
from must.tasks.self_supervised.motion_segmentation import require_motion_masks
from must.train import checkpoint as checkpoints
from must.train.config import TrainConfig
from must.train.engine import FitResult, fit
from must.train.weighting import build_weighting

RECORD_NAME = PRETRAIN_RECORD
METHOD_SUMMARIES = {
    "simclr": "SimCLR (Chen et al. 2020): two views, NT-Xent against the batch's other views",
    "byol": "BYOL (Grill et al. 2020): predict a momentum target's projection of the other view",
    "mocov2": "MoCo v2 (He et al. 2020, Chen et al. 2020): momentum key encoder, queue of negatives",
    "mocov3": "MoCo v3 (Chen, Xie & He 2021): momentum encoder, predictor, in-batch keys, symmetric",
    "dino": "DINO (Caron et al. 2021): multi-crop self-distillation from a centred momentum teacher",
    "barlow_twins": "Barlow Twins (Zbontar et al. 2021): cross-correlation of the views towards identity",
    "vicreg": "VICReg (Bardes et al. 2022): variance, invariance and covariance terms",
    "simsiam": "SimSiam (Chen & He 2021): predictor and stop-gradient, no negatives, no momentum",
    "mae": "MAE (He et al. 2022): reconstruct the pixels of 75% masked patches (ViT backbone)",
    "pirl": "PIRL (Misra & van der Maaten 2020): jigsaw-invariant embedding against a memory bank",
    "rotation": "RotNet (Gidaris et al. 2018): classify the rotation of the image",
    "jigsaw": "Jigsaw (Noroozi & Favaro 2016): classify the permutation of shuffled tiles",
    "relative_position": "Context prediction (Doersch et al. 2015): position of one patch relative to another",
    "colorization": "Colorization (Zhang et al. 2016): predict colour from lightness",
    "exemplar": "Exemplar networks (Dosovitskiy et al. 2014): every image its own class",
    "motion_segmentation": "Motion segmentation (Pathak et al. 2017): which pixels of a video frame move",
    "multi": "Doersch & Zisserman 2017: several pretext heads on one trunk (tasks=[...])",
}
"""One line per method (``must pretrain --help``)."""
METHODS = tuple(METHOD_SUMMARIES)
MOMENTUM_METHODS = ("byol", "mocov2", "mocov3", "dino")
"""Methods with a momentum encoder: its copy of the backbone sees plain images (no lasso mixing,
no harmonized inputs)."""
DOERSCH_TASKS = ("relative_position", "colorization", "exemplar")
"""``multi``'s default heads: Doersch & Zisserman's image tasks (motion segmentation needs video)."""
DATA_SIZED_OPTIONS = {"exemplar": "num_instances", "pirl": "bank_size"}
"""Options that default to the number of images (one surrogate class / memory-bank slot per image,
Dosovitskiy et al. 2014 sec. 2, Wu et al. 2018), capped at :data:`MAX_INSTANCES`."""
MAX_INSTANCES = 65536


@dataclass(frozen=True)
class PretrainConfig:
    method: Literal["simclr", "byol", "mocov2", "mocov3", "dino", "barlow_twins", "vicreg", "simsiam",
                    "mae", "pirl", "rotation", "jigsaw", "relative_position", "colorization", "exemplar",
                    "motion_segmentation", "multi"] = "simclr"
    tasks: tuple[str, ...] = ()
    """``multi`` only: its pretext tasks (default: relative_position, colorization, exemplar)."""
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Constructor options per pretext task, e.g. ``simclr: {temperature: 0.2, view_size: 32}``."""
    schedule: Literal["alternate", "joint"] = "alternate"
    """Doersch & Zisserman sec. 3: one head per iteration (gradients accumulated over a cycle) or
    every head on every batch. One head: both are plain training."""
    cycles_per_update: int = 1
    """``alternate``: cycles over all heads accumulated per optimizer step."""
    lasso: float | None = None
    """L1 weight of the lasso (sec. 4.2): each head reads its own mixture of C2..C5; None = off."""
    harmonize: bool = False
    """Feed every trunk input as Lab lightness replicated to RGB (sec. 4.3)."""
    data: DatasetConfig | None = None
    """The unlabeled images (any format: its labels are ignored)."""
    more_data: tuple[DatasetConfig, ...] = ()
    """Further image sets mixed with ``data`` (sampled uniformly over the union, MuST sec. 3.4), e.g.
    clips with motion masks (``format: video``) beside still images: motion segmentation learns from
    the frames, the other tasks from every image (Doersch & Zisserman sec. 3 train the image tasks
    on ImageNet, motion segmentation on video)."""
    model: ModelConfig = field(default_factory=demo_model)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=300, batch_size=32, lr=0.05))
    """``batch_size`` is the batch of one iteration (every head sees full batches); ``steps``
    counts optimizer updates (``alternate``: each one is ``cycles x heads`` iterations)."""
    image_size: int = 64
    """Side of the scale-jittered crop the views are made from."""
    scale_range: tuple[float, float] = (0.5, 2.0)

    def __post_init__(self) -> None:
        if self.method not in METHODS:  # from_dict checks the Literal; direct construction does not
            raise config_lib.ConfigError(f"unknown pretrain method '{self.method}'; choose one of: "
                                         f"{', '.join(METHODS)}")
        if self.tasks and self.method != "multi":
            raise config_lib.ConfigError(f"tasks lists the heads of method 'multi'; method '{self.method}' "
                                         f"is one task")
        unknown = [name for name in self.tasks if name not in pretext_builders()]
        if unknown:
            raise config_lib.ConfigError(f"unknown pretext task(s) {unknown}; choose from: "
                                         f"{', '.join(pretext_builders())}")
        if len(set(self.tasks)) != len(self.tasks):
            raise config_lib.ConfigError(f"tasks listed twice: {list(self.tasks)}")
        if self.cycles_per_update < 1:
            raise config_lib.ConfigError(f"cycles_per_update must be >= 1, got {self.cycles_per_update}")
        if self.lasso is not None and self.lasso < 0:
            raise config_lib.ConfigError(f"lasso (its L1 weight) must be >= 0 or null, got {self.lasso}")
        momentum = [name for name in self.task_names if name in MOMENTUM_METHODS]
        if momentum and (self.lasso is not None or self.harmonize):
            raise config_lib.ConfigError(f"lasso / harmonize change what the trunk reads, and the momentum "
                                         f"encoder of {momentum} copies the plain backbone: use them without")
        if "mae" in self.task_names and (self.lasso is not None or self.harmonize):
            raise config_lib.ConfigError("lasso / harmonize change what the trunk reads, and mae runs the ViT "
                                         "trunk itself on the visible patches: use them without")
        unused = sorted(set(self.task_options) - set(self.task_names))
        if unused:
            raise config_lib.ConfigError(f"task_options for task(s) {unused} that method '{self.method}' does not "
                                         f"train; its tasks: {', '.join(self.task_names)}")

    @property
    def task_names(self) -> tuple[str, ...]:
        if self.method != "multi":
            return (self.method,)
        return self.tasks or DOERSCH_TASKS


def build_pretext_tasks(config: PretrainConfig, image_count: int) -> dict[str, SelfSupervisedTask]:
    """The method's tasks; exemplar's classes and PIRL's bank default to one per image."""
    tasks = {}
    for name in config.task_names:
        options = dict(config.task_options.get(name, {}))
        if name in DATA_SIZED_OPTIONS:
            options.setdefault(DATA_SIZED_OPTIONS[name], max(1, min(image_count, MAX_INSTANCES)))
        tasks[name] = construct(name, pretext_builders()[name], options)
    return tasks


def scheduled(batches: Iterator[Batch], schedule: Schedule, first: int) -> Iterator[Batch]:
    """Keeps, in micro-batch ``first + i``, only the targets of the schedule's active tasks (the
    same on every rank: the schedule is a function of the micro-batch index)."""
    try:
        for index, batch in enumerate(batches, start=first):
            active = schedule.active(index)
            yield Batch(batch.keys, batch.images, {n: t for n, t in batch.targets.items() if n in active})
    finally:
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # stops DataLoader workers


def engine_config(train: TrainConfig, schedule: Schedule) -> TrainConfig:
    """One optimizer update = ``steps_per_update`` iterations of ``train.batch_size`` images."""
    iterations = schedule.steps_per_update
    return dataclasses.replace(train, batch_size=train.batch_size * iterations,
                               accumulate=train.accumulate * iterations)


def build_pretrain_model(config: PretrainConfig, tasks: Mapping[str, SelfSupervisedTask]) -> MultiTaskModel:
    model = build_model(config.model, tasks)
    if config.lasso is None and not config.harmonize:
        return model
    return DoerschMultiTaskModel(model, config.lasso, config.harmonize)


def run_pretrain(config: PretrainConfig, out: Path) -> FitResult:
    """Pre-trains (or resumes) into ``out``: ``checkpoint.pt``, ``pretrain.json``, ``config.yaml``,
    ``metrics.jsonl``, ``events/``."""
    if config.data is None:
        raise config_lib.ConfigError("pretrain: no images given (--data FORMAT:ROOT)")
    # bad data or options fail before anything is written
    datasets = [open_dataset(spec) for spec in (config.data, *config.more_data)]
    require_motion_masks(config.task_names, datasets)
    tasks = build_pretext_tasks(config, sum(len(dataset) for dataset in datasets))
    device = distributed.pick_device(config.train.device)
    distributed.setup(device)
    checkpoints.seed_everything(config.train.seed)  # the same initial weights in every run
    # before anything is written: a model the method cannot use (mae without a ViT) is refused here
    model = build_pretrain_model(config, tasks).to(device)
    out.mkdir(parents=True, exist_ok=True)
    if distributed.is_main_process():
        config_lib.save(config, out / "config.yaml")
    schedule = build_schedule(config.schedule, list(tasks), **(
        {"cycles_per_update": config.cycles_per_update, "seed": config.train.seed}
        if config.schedule == "alternate" else {}))
    train = engine_config(config.train, schedule)
    inner = build_weighting(train.weighting, list(tasks), config.train.batch_size, train.lr, train.seed)
    penalty = model.penalty if isinstance(model, DoerschMultiTaskModel) and model.has_lasso else None
    weighting = ScheduledWeighting(inner, schedule.loss_scale * schedule.steps_per_update, penalty)

    def batches_from(first: int) -> Iterator[Batch]:
        stream = make_loader(datasets, tasks, train.micro_batch_size, train.seed, config.image_size,
                             start_step=first, workers=train.workers, scale_range=config.scale_range,
                             device=device)
        return scheduled(stream, schedule, first)

    options = {name: task.describe() for name, task in tasks.items()}
    result = fit(model, tasks, batches_from, train, out, weighting=weighting,
                 checkpoint_extra={"pretrain": {"method": config.method, "tasks": options}},
                 # mixed sets: a rank's batch may hold no frame, leaving motion segmentation's head unused
                 find_unused_parameters=None if (len(tasks) == 1 or config.schedule == "joint")
                 and not config.more_data else True)
    if distributed.is_main_process():
        write_record(out, config, tasks, result)
    return result


def write_record(out: Path, config: PretrainConfig, tasks: Mapping[str, SelfSupervisedTask],
                 result: FitResult) -> None:
    """``pretrain.json``: what was trained and how (atomically)."""
    record = PretrainRecord(
        method=config.method, tasks=config_lib.to_dict({n: t.describe() for n, t in tasks.items()}),
        task_options=config_lib.to_dict(config.task_options), schedule=config.schedule,
        lasso=config.lasso, harmonize=config.harmonize, model=config.model, image_size=config.image_size,
        batch_size=config.train.batch_size, learning_rate=config.train.lr, steps=result.step,
        losses=result.losses or last_logged_losses(out), checkpoint=result.checkpoint.name)
    model_records.write_record(record, out)


def last_logged_losses(out: Path) -> dict[str, float]:
    """The losses of the last logged step in ``metrics.jsonl``: a rerun of a finished run trains
    nothing, so ``fit`` returns no losses, and the record must keep those of the run itself."""
    try:
        lines = (out / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a killed writer
            continue
        if isinstance(entry, dict) and "loss" in entry:
            return {key: float(value) for key, value in entry.items() if key.startswith("loss")}
    return {}


def load_lasso_matrix(checkpoint: Path) -> dict[str, Any] | None:
    """The learned lasso of a ``multi`` checkpoint (rows: tasks, columns: C2..C5 for the heads
    that read C5, P2..P7 for the pixel heads, NaN elsewhere), or None."""
    return read_lasso_matrix(checkpoints.load(checkpoint))


SUMMARY = "self-supervised pre-training (SimCLR, BYOL, MoCo, DINO, Barlow Twins, VICReg, SimSiam, MAE, pretext tasks)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = textwrap.fill(
        "Self-supervised pre-training of the ResNet-FPN trunk on unlabeled images by one method, or "
        "`multi` (Doersch & Zisserman 2017: several pretext heads, schedule=alternate|joint, "
        "lasso=L1 weight, harmonize=true). Writes checkpoint.pt (load it with `must transfer --init`: "
        "backbone + FPN), pretrain.json, metrics.jsonl, events/ and config.yaml into --out; resumes "
        "from --out/checkpoint.pt. Motion segmentation needs clips with motion masks (--data video:DIR); "
        "mae needs a ViT backbone (model.backbone=timm:vit_tiny_patch16_224). "
        "Method options: task_options.METHOD.OPTION=VALUE.", width=79)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "methods:\n" + "\n".join(f"  {name:<18} {line}" for name, line in METHOD_SUMMARIES.items())
    parser.add_argument("--method", required=True, choices=METHODS, metavar="METHOD",
                        help="one of the methods listed below")
    parser.add_argument("--data", metavar="FORMAT:ROOT",
                        help="the images (labels ignored), e.g. folder:DIR, world:DIR, imagefolder:DIR")
    parser.add_argument("--out", required=True, type=Path, help="output directory, e.g. runs/x/pretrain/simclr")
    config_lib.add_config_arguments(parser, PretrainConfig, "pretrain", "train.steps=1000 schedule=joint")


def build_config(args: argparse.Namespace) -> PretrainConfig:
    """Preset (its ``pretrain`` section) -> ``--method`` / ``--data`` -> overrides, validated."""
    def with_flags(data: dict[str, Any]) -> dict[str, Any]:
        data = config_lib.merge(data, {"method": args.method})
        return config_lib.merge(data, {"data": parse_dataset_spec(args.data)}) if args.data else data

    return config_lib.load(PretrainConfig, args.config, args.overrides, section="pretrain", flags=with_flags)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    result = run_pretrain(config, args.out)
    if distributed.is_main_process():
        losses = ", ".join(f"{key}={value:.4f}" for key, value in result.losses.items() if key.startswith("loss"))
        print(f"pretrain '{config.method}' -> {result.checkpoint} ({result.step} steps): {losses}")
    return 0
