"""What ``must transfer`` runs: the downstream tasks, their grids, and the checkpoint under test
(MuST sec. 3.5 / supplementary sec. 2.3).

Supplementary sec. 2.3: "we initialize the parameters in the ResNet and FPN backbone with a
pre-trained model and randomly initialize the rest of the layers. We perform end-to-end fine-tuning
with an extensive grid search of the combinations of learning rate and training steps [...] set [the
weight decay] to 1e-4. All models are trained with cosine learning rate." Each
:class:`DownstreamTask` is one column of the paper's Table 2; its ``lrs`` x ``steps`` is the grid.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from must import config as config_lib
from must import distributed
from must.data.readers import DatasetConfig
from must.data.readers.fashion_mnist import DEFAULT_ROOT as FASHION_MNIST_ROOT
from must.errors import ConfigError
from must.models import ModelConfig, demo_model
from must.train.config import TrainConfig

Mode = Literal["finetune", "linear", "knn"]
WORLD_TASKS = ("detection", "segmentation", "depth", "normals")
"""Downstream tasks of the default suite read from the world's ``transfer`` domain (paper: PASCAL
detection and segmentation, NYU v2 depth, DIODE normals)."""
WORLD_SPLITS = ("train", "val", "test")
SMALL_IMAGE_OPTIONS: dict[str, dict[str, Any]] = {
    "detection": {"box_batch_size_per_image": 32, "representation_size": 256}}
"""Task options for 64 px images with a handful of objects each: 32 sampled RoIs per image and a
256-wide box-head fc instead of 128 and 1024 make a training step much cheaper (the Fast R-CNN
head, not the backbone, dominates at this size)."""


@dataclass(frozen=True)
class DownstreamTask:
    """One downstream dataset and its grid (MuST supp. sec. 2.3, one paragraph per dataset)."""

    task: str
    """Task type: classification, detection, segmentation, depth or normals."""
    train: DatasetConfig
    test: DatasetConfig
    val: DatasetConfig | None = None
    """Where the grid's choice is made; None = hold out ``val_fraction`` of ``train``."""
    more_train: tuple[DatasetConfig, ...] = ()
    """More training sets with ``train``'s classes, read as one with it (supp. sec. 2.3 trains
    PASCAL detection on VOC 2007 + 2012 trainval); a held-out val comes from ``train`` alone."""
    task_options: dict[str, Any] = field(default_factory=dict)
    """Task constructor options on top of the class count and names read from ``train``, e.g.
    ``background_class: true`` (the paper's CIFAR-100 head with 101 outputs)."""
    val_fraction: float = 0.1
    """Share of ``train`` held out as validation when ``val`` is None (split by ``seed``)."""
    val_limit: int | None = None
    """At most this many held-out images (the rest stay out of training too)."""
    image_size: int = 64
    scale_range: tuple[float, float] = (0.5, 2.0)
    """Supp. sec. 2.3: scale jittering [0.5, 2.0] for every dense task."""
    flip: bool = True
    lrs: tuple[float, ...] = (0.05,)
    """Peak learning rates of the grid (paper: 0.005 to 0.32)."""
    steps: tuple[int, ...] = (200,)
    """Training steps of the grid (paper: 5000 to 20000; DIODE up to 80000)."""
    batch_size: int = 32
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9
    weight_decay: float = 1e-4
    """Supp. sec. 2.3: "we experiment with different weight decays but do not find it making a big
    difference and set it to 1e-4"."""
    warmup_steps: int = 0
    layer_decay: float = 1.0
    """Layer-wise learning-rate decay over the backbone (BEiT / MAE fine-tuning of ViTs use
    0.65-0.75): the last layer trains at the full rate, the stem at ``layer_decay ** L``; 1 = off."""
    grad_clip: float | None = None
    eval_batch_size: int = 64
    checkpoint_every: int = 100
    """Steps between a cell's checkpoints (an interrupted cell resumes from the last one)."""
    substitutes: str | None = None
    """The dataset this task's data stands in for when the suite's own is missing (e.g.
    ``fashion_mnist``); every result records it, so a table column never changes meaning unseen."""

    def __post_init__(self) -> None:
        if not self.lrs or not self.steps:
            raise ConfigError("lrs and steps need at least one value each")
        if any(lr <= 0 for lr in self.lrs) or any(steps <= 0 for steps in self.steps):
            raise ConfigError(f"lrs and steps must be positive, got {self.lrs} and {self.steps}")
        if len(set(self.lrs)) != len(self.lrs) or len(set(self.steps)) != len(self.steps):
            raise ConfigError(f"grid values listed twice: lrs {self.lrs}, steps {self.steps}")
        if self.val is None and not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.val_limit is not None and self.val_limit <= 0:
            raise ConfigError(f"val_limit must be positive or null, got {self.val_limit}")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.image_size < 16:
            raise ConfigError(f"image_size must be at least 16, got {self.image_size}")

    def train_config(self, lr: float, steps: int, seed: int, device: str, precision: str,
                     progress: bool) -> TrainConfig:
        """The engine's config of one grid cell: cosine decay to zero over ``steps``."""
        return TrainConfig(
            steps=steps, batch_size=self.batch_size, lr=lr, optimizer=self.optimizer,
            momentum=self.momentum, weight_decay=self.weight_decay,
            warmup_steps=min(self.warmup_steps, steps - 1), grad_clip=self.grad_clip,
            layer_decay=self.layer_decay,
            precision=precision,  # type: ignore[arg-type]
            checkpoint_every=self.checkpoint_every, seed=seed, device=device, progress=progress,
            log_every=max(1, min(10, steps)))


@dataclass(frozen=True)
class TransferConfig:
    init: str | None = None
    """The checkpoint under test: one of ours (``checkpoint.pt``), a torchvision / timm ResNet
    weight file, or None (from scratch). Backbone + FPN (ours) or the backbone are loaded; heads
    are always new."""
    init_name: str = "scratch"
    """The row of the results table: scratch, supervised, simclr, must, ..."""
    tasks: dict[str, DownstreamTask] = field(default_factory=dict)
    """Column name -> downstream task; results go to ``<out>/transfer/<init_name>/<name>/``."""
    mode: Mode = "finetune"
    """``finetune``: every layer trains (MuST sec. 3.5). ``linear``: backbone + FPN frozen with
    eval-mode norms, only the head trains (Doersch & Zisserman 2017 sec. 4). ``knn``: weighted
    k-NN on frozen pooled features, classification tasks only (:mod:`must.transfer.knn`)."""
    model: ModelConfig = field(default_factory=demo_model)
    """Architecture; must match ``init`` (its ``init`` field is ignored: the top-level one wins)."""
    input_transform: Literal["auto", "rgb", "harmonized"] = "auto"
    """What the trunk is fed: ``auto`` = what ``init`` was trained with (its checkpoint's record;
    RGB for checkpoints without one, torchvision / timm files and from scratch); ``harmonized`` =
    Lab lightness replicated to three channels (Doersch & Zisserman 2017 sec. 4.3); ``rgb`` = the
    images as they are."""
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    workers: int = 1
    """Grid cells trained at once in a process pool, one torch thread each (under torchrun, each
    rank takes every N-th cell and may use a pool of its own)."""
    data_workers: int = 0
    """DataLoader worker processes per cell."""
    seed: int = 0
    """Seeds the val hold-out, the heads' initialization and every cell's data order (the same in
    every cell, so cells differ only by learning rate and steps)."""
    keep_checkpoints: bool = True
    """Keep each finished cell's ``checkpoint.pt`` (False deletes it once its scores are written)."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.data_workers < 0:
            raise ConfigError(f"data_workers must be >= 0, got {self.data_workers}")
        if not self.init_name or "/" in self.init_name or self.init_name.startswith("."):
            raise ConfigError(f"init_name must be a plain directory name, got '{self.init_name}'")
        bad = [name for name in self.tasks if not name or "/" in name or name.startswith(".")]
        if bad:
            raise ConfigError(f"task names must be plain directory names, got {bad}")


def world_splits(world_root: str | Path) -> dict[str, DatasetConfig]:
    """``<world_root>/{train,val,test}`` as world datasets (``must demo`` writes them under
    ``<run>/data/transfer``)."""
    root = Path(world_root)
    return {split: DatasetConfig(format="world", root=str(root / split)) for split in WORLD_SPLITS}


def default_suite(world_root: str | Path, fashion_root: str | Path | None = FASHION_MNIST_ROOT,
                  ) -> dict[str, DownstreamTask]:
    """The paper's five downstream columns (Table 2) at demo size, one grid cell each.

    Classification is Fashion-MNIST (standing in for CIFAR-100: real images, 28 px grayscale
    replicated to RGB, trained at 32 px, with the paper's extra background output). Without it
    (``fashion_root`` None, or a folder that does not exist: then with a warning on stderr) the
    world's own image classes take its place, marked ``substitutes: fashion_mnist`` in every result
    and in the report. The other four read the world's shifted ``transfer`` domain.
    """
    world = world_splits(world_root)
    suite: dict[str, DownstreamTask] = {}
    if fashion_root is not None and Path(fashion_root).is_dir():
        suite["classification"] = DownstreamTask(
            task="classification",
            train=DatasetConfig(format="fashion_mnist", root=str(fashion_root), split="train"),
            test=DatasetConfig(format="fashion_mnist", root=str(fashion_root), split="test", limit=2000),
            val_fraction=0.1, val_limit=2000, task_options={"background_class": True},
            image_size=32, scale_range=(1.0, 1.0), lrs=(0.1,), steps=(200,), batch_size=64)
    else:
        if fashion_root is not None and distributed.is_main_process():
            print(f"warning: Fashion-MNIST not found at {fashion_root}: the classification transfer "
                  "column uses the world's image classes instead (recorded as 'substitutes' in its "
                  "results)", file=sys.stderr, flush=True)
        suite["classification"] = DownstreamTask(
            task="classification", train=world["train"], val=world["val"], test=world["test"],
            task_options={"background_class": True}, image_size=64, lrs=(0.1,), steps=(200,),
            substitutes="fashion_mnist")
    for task in WORLD_TASKS:
        suite[task] = DownstreamTask(task=task, train=world["train"], val=world["val"],
                                     test=world["test"], image_size=64, lrs=(0.05,), steps=(200,),
                                     batch_size=16, task_options=SMALL_IMAGE_OPTIONS.get(task, {}))
    # At 200 steps no initialization gets past the three "stuff" classes (floor, wall, sky: mIoU
    # ~0.16 for all); the objects need a longer, faster schedule (measured: mIoU 0.17-0.21 at 400).
    suite["segmentation"] = dataclasses.replace(suite["segmentation"], lrs=(0.1,), steps=(400,))
    return suite


def with_settings(suite: Mapping[str, DownstreamTask], settings: Mapping[str, Any],
                  where: str = "every_task") -> dict[str, DownstreamTask]:
    """Every task of ``suite`` with ``settings`` replacing its own (e.g. ``image_size: 32,
    steps: [4]`` for a quick run), validated like any config (``where`` names the key in errors)."""
    if not settings:
        return dict(suite)
    return {name: config_lib.from_dict(DownstreamTask, config_lib.merge(config_lib.to_dict(task), settings), where)
            for name, task in suite.items()}
