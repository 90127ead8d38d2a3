"""What ``must demo`` runs, as data: the world, the model, and a plan per stage (teachers, labeling,
student and its comparison variants, self-supervised pre-trainings, transfer). The presets in
``configs/*.yaml`` fill a :class:`DemoConfig`; :mod:`must.stages.demo.stage_configs` turns it into
each stage's own config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from must import config as config_lib
from must.data.readers import DatasetConfig
from must.data.readers.fashion_mnist import DEFAULT_ROOT as FASHION_MNIST_ROOT
from must.models import ModelConfig, demo_model
from must.stages.pretrain import PretrainConfig
from must.stages.student import RandAugmentConfig
from must.train.config import TrainConfig, WeightingConfig
from must.train.weighting import METHODS as WEIGHTING_METHODS
from must.transfer.config import DownstreamTask
from must.world.splits import WorldDataConfig

TEACHER_DOMAINS = {"classification": "objects", "detection": "clutter", "segmentation": "scenes",
                   "depth": "depth"}
"""Which world domain trains which teacher (the paper: ImageNet, Objects365, COCO, MiDaS data)."""


@dataclass(frozen=True)
class TeacherPlan:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=400, batch_size=32, lr=0.05))
    task_options: dict[str, Any] = field(default_factory=dict)
    data: DatasetConfig | None = None
    """The teacher's labeled training set; None = its world domain (``TEACHER_DOMAINS``)."""
    val: DatasetConfig | None = None
    """Its validation set; None = the world domain's ``val`` split."""
    image_size: int | None = None
    """Its input size; None = the demo's ``image_size`` (MuST supp. sec. 2.1 trains each teacher
    at its own: 224 classification, 640 detection, 896 segmentation)."""


@dataclass(frozen=True)
class LabelPlan:
    batch_size: int = 64
    workers: int | None = None
    """Loader processes; None = the free cores (``must.label.labeler.default_workers``)."""
    thresholds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class StudentPlan:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=800, batch_size=32, lr=0.05, weighting=WeightingConfig(method="must")))
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    randaugment: RandAugmentConfig | None = None
    processes: int = 1
    """DDP processes training the student and every ``students`` variant (``torchrun``, the cores
    split among them); 1 = in the demo's own process."""


@dataclass(frozen=True)
class StudentVariant:
    """Another student of the comparison, trained like the main one (``student``) but on other
    labels: the Table 3 ladder (a subset of the pseudo-label tasks) or Table 5 (the teachers'
    own labeled sets, each image with its one real label, with or without pseudo labels for the
    other tasks)."""

    tasks: tuple[str, ...] = ()
    """Teacher tasks it learns; empty = every teacher's."""
    pool: bool = True
    """Learn from the ``pool``'s pseudo labels."""
    labeled: bool = False
    """Learn from the teachers' labeled training sets (their real labels)."""
    pseudo_on_labeled: bool = False
    """Those labeled sets also carry every teacher's pseudo labels for the tasks they lack
    (labels them first: ``pseudo/<domain>``)."""
    pool_images: int | None = None
    """Learn from the first this many ``pool`` images only (None = all): the same steps on less
    unlabeled data (MuST Table 4: more unlabeled images, a better student)."""
    weighting: str | None = None
    """Its loss weighting (``train.weighting.method``: equal, uncertainty, pcgrad, upgrad, ...)
    instead of the main student's: the multi-task weightings compared on the same pseudo labels."""

    def __post_init__(self) -> None:
        if self.weighting is not None and self.weighting not in WEIGHTING_METHODS:
            raise config_lib.ConfigError(f"students: unknown weighting '{self.weighting}'; choose one of: "
                                         f"{', '.join(sorted(WEIGHTING_METHODS))}")
        if not (self.pool or self.labeled):
            raise config_lib.ConfigError("a student variant needs pool=true or labeled=true")
        if self.pool_images is not None and (self.pool_images < 1 or not self.pool):
            raise config_lib.ConfigError("pool_images needs pool=true and a positive count")
        if self.pseudo_on_labeled and not self.labeled:
            raise config_lib.ConfigError("pseudo_on_labeled needs labeled=true")


@dataclass(frozen=True)
class TransferPlan:
    inits: tuple[str, ...] = ("scratch", "supervised", "must")
    """Rows of the comparison: ``scratch``, ``supervised`` (the classification teacher), ``must``
    (the student), ``teacher_<task>`` (any teacher, Table 4), a ``pretrain`` name (e.g. ``simclr``)
    or a ``students`` variant name."""
    tasks: dict[str, DownstreamTask] = field(default_factory=dict)
    """Downstream tasks; empty = the default suite (Fashion-MNIST + the world's transfer domain)."""
    lr_factors: tuple[float, ...] = (1.0,)
    step_factors: tuple[float, ...] = (1.0,)
    """The grid (supp. sec. 2.3): every task's learning rates times ``lr_factors`` x its step
    counts times ``step_factors``; the best cell on validation is reported on test."""
    workers: int = 1
    knn: bool = False
    """Also k-NN top-1 of every row on the classification tasks (``must transfer --mode knn``: no
    training, one pass over the task's images), the report's k-NN table."""
    every_task: dict[str, Any] = field(default_factory=dict)
    """Settings replacing those of every downstream task, e.g. ``{image_size: 32, steps: [4]}``
    (the ``tiny`` preset's quick run of the default suite)."""

    def __post_init__(self) -> None:
        valid = [f.name for f in dataclasses.fields(DownstreamTask)]
        unknown = sorted(set(self.every_task) - set(valid))
        if unknown:
            raise config_lib.ConfigError(f"every_task: unknown setting(s) {unknown}; valid: {', '.join(valid)}")


@dataclass(frozen=True)
class RowPlan:
    """What one row of the transfer table changes from the preset, e.g. an MAE row on a ViT trunk
    (``rows: {mae: {model: {backbone: timm:vit_tiny_patch16_224}, transfer: {lrs: [0.01]}}}``)."""

    model: dict[str, Any] = field(default_factory=dict)
    """Keys of ``model`` replacing the preset's for the row's pre-training and its transfer cells."""
    transfer: dict[str, Any] = field(default_factory=dict)
    """Settings replacing every downstream task's own in the row's cells (as ``transfer.every_task``)."""

    def __post_init__(self) -> None:
        for name, given, valid in (("model", self.model, [f.name for f in dataclasses.fields(ModelConfig)]),
                                   ("transfer", self.transfer, [f.name for f in dataclasses.fields(DownstreamTask)])):
            unknown = sorted(set(given) - set(valid))
            if unknown:
                raise config_lib.ConfigError(f"{name}: unknown setting(s) {unknown}; valid: {', '.join(valid)}")

    def apply_model(self, model: ModelConfig, where: str) -> ModelConfig:
        """``model`` with this row's keys, checked as a ``model`` section is."""
        if not self.model:
            return model
        return config_lib.from_dict(ModelConfig, config_lib.merge(config_lib.to_dict(model), self.model), where)


@dataclass(frozen=True)
class DemoConfig:
    world: WorldDataConfig = field(default_factory=WorldDataConfig)
    model: ModelConfig = field(default_factory=demo_model)
    image_size: int = 64
    teachers: dict[str, TeacherPlan] = field(default_factory=lambda: {t: TeacherPlan() for t in TEACHER_DOMAINS})
    teacher_workers: int = 1
    """Teachers trained at once, each in its own process with one torch thread, started in the
    order of ``teachers`` (they are independent runs, MuST sec. 3.1); 1 = one after another in the
    demo's process with all its threads. Meant for CPUs: on CUDA the processes share one GPU."""
    label: LabelPlan = field(default_factory=LabelPlan)
    student: StudentPlan = field(default_factory=StudentPlan)
    students: dict[str, StudentVariant] = field(default_factory=dict)
    """More students under ``students/<name>/`` (Tables 3 and 5); each is a transfer row."""
    pretrain: dict[str, PretrainConfig] = field(default_factory=dict)
    """Self-supervised pre-trainings on the ``pool`` images under ``pretrain/<name>/`` (Table 2's
    SimCLR row); ``data`` is the pool and ``model`` the demo's (with ``rows.<name>``'s changes). Each
    is a transfer row."""
    pool: DatasetConfig | None = None
    """The shared image set the teachers label; None = the world's ``pool`` domain."""
    transfer: TransferPlan = field(default_factory=TransferPlan)
    rows: dict[str, RowPlan] = field(default_factory=dict)
    """Per-row changes (:class:`RowPlan`) for a pre-training (a ``pretrain`` name) or a
    ``scratch_<name>`` row, the from-scratch reference of such a change; the students and teachers
    are trained with the preset's model, so their rows keep it."""
    fashion_mnist: str | None = FASHION_MNIST_ROOT
    """The default suite's classification data; null = the world's image classes (recorded)."""
    report: bool = True
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """Overrides every training stage's ``train.precision`` and the transfer cells' (``auto``
    keeps each stage's own setting)."""
    device: str = "auto"
    """Overrides every stage's device (teachers, labeling, students, pre-training, transfer):
    ``cpu``, ``cuda``, ``cuda:N``; ``auto`` keeps each stage's own (CUDA when there is a GPU)."""

    def __post_init__(self) -> None:
        for name, row in self.rows.items():
            if name not in self.pretrain and not name.startswith("scratch_"):
                raise config_lib.ConfigError(
                    f"rows.{name}: only a pre-training (one of: {', '.join(self.pretrain) or 'none'}) or a "
                    "scratch_<name> row can change its model or transfer settings")
            row.apply_model(self.model, f"rows.{name}.model")

    def row_model(self, name: str) -> ModelConfig:
        """The model of row ``name``: the preset's, with the row's changes (``rows``)."""
        row = self.rows.get(name)
        return row.apply_model(self.model, f"rows.{name}.model") if row is not None else self.model
