"""The multi-task model: one ResNet-FPN trunk shared by one head per task (MuST sec. 3.3).

``MultiTaskModel = backbone (C2..C5) + FPN (P2..P7) + {task name: head}``. The trunk runs once per
batch; every head reads the same :class:`~must.models.features.Features`. A specialized teacher
(MuST sec. 3.1) is the same class with one head; the student has one head per task. The FPN runs
only when a head reads the pyramid: a classification teacher (pooled C5) computes none.

Self-supervised tasks (pretext targets beside ground truth and pseudo labels) bring their
own images, the views the loader made: the model hands them its trunk and their head
(``task.forward_views(head, features_fn, target)``, see :mod:`must.tasks.self_supervised.base`)
instead of calling the head on the batch's features.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from must.data.sample import TaskBatch
from must.models.backbone import ResNetBackbone, build_backbone
from must.models.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from must.models.features import Features, FeatureSpec
from must.models.fpn import FeaturePyramid
from must.models.heads import ClassificationHead
from must.models.running_statistics import running_statistics_frozen
from must.models.weights import load_initial_weights

if TYPE_CHECKING:  # must.tasks imports must.models: a runtime import here would be circular
    from must.tasks.base import Task
    from must.tasks.self_supervised.base import SelfSupervisedTask


class MultiTaskModel(nn.Module):
    """``forward(images, targets, tasks) -> {task name: head output}``.

    ``images`` are ``float [B, 3, H, W]`` in ``[0, 1]``; the model normalizes them with its own
    ``mean`` / ``std`` so every stage (teacher, labeler, student) feeds the same thing.
    ``view_tasks`` are the self-supervised tasks, by name: each runs the trunk on its own views
    and trains the head ``heads[task.head_name]`` (FixMatch: the head of the task it wraps).
    ``sync_bn`` asks the training engine to make its BatchNorm layers SyncBatchNorm under DDP.
    """

    input_transform = "rgb"
    """What the trunk's input is made from the images (a subclass may feed another transform,
    e.g. Doersch & Zisserman's harmonized lightness); recorded in every checkpoint."""

    def __init__(self, backbone: ResNetBackbone, fpn: FeaturePyramid, heads: Mapping[str, nn.Module],
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 view_tasks: Mapping[str, SelfSupervisedTask] | None = None, sync_bn: bool = False) -> None:
        super().__init__()
        self.sync_bn = sync_bn
        self.backbone = backbone
        self.fpn = fpn
        self.heads = nn.ModuleDict(dict(heads))
        for head in self.heads.values():  # momentum encoders keep their own copy of the backbone
            attach = getattr(head, "attach_trunk", None)
            if attach is not None:
                attach(self)
        # A plain dict: tasks are not modules (their heads are, above).
        self.view_tasks: dict[str, SelfSupervisedTask] = dict(view_tasks or {})
        headless = {name: task.head_name for name, task in self.view_tasks.items()
                    if task.head_name not in self.heads}
        if headless:
            raise KeyError(f"self-supervised task(s) without their head: {headless}; heads: {list(self.heads)}")
        # Not persistent: normalization is config (saved next to the run), not learned weights,
        # so checkpoints stay loadable across configs that differ only in it.
        self.register_buffer("mean", _channel_vector(mean), persistent=False)
        self.register_buffer("std", _channel_vector(std), persistent=False)

    @property
    def spec(self) -> FeatureSpec:
        return feature_spec(self.backbone, self.fpn)

    @property
    def task_names(self) -> list[str]:
        """Every head's task and every self-supervised task (a name in both is the latter)."""
        return list(dict.fromkeys([*self.heads, *self.view_tasks]))

    @property
    def runs_fpn(self) -> bool:
        """Whether any head reads the pyramid (otherwise the FPN is kept, so every checkpoint has
        the same ``backbone.* / fpn.* / heads.*`` layout, but never run)."""
        return any(reads_pyramid(head) for head in self.heads.values())

    def head_of(self, name: str) -> nn.Module:
        """The head task ``name`` trains: its own, or for a self-supervised task ``head_name``'s."""
        task = self.view_tasks.get(name)
        return self.heads[task.head_name if task is not None else name]

    def record(self) -> dict[str, Any]:
        """What a checkpoint records about this model beyond its tensors (:meth:`fit` stores it
        under ``model_record``): its input transform; a subclass adds what it has."""
        return {"input_transform": self.input_transform}

    def features(self, images: Tensor, pyramid: bool | None = None) -> Features:
        """Normalizes ``images`` and runs the backbone once, and the FPN if ``pyramid`` (by default
        if a head reads it; an empty pyramid otherwise)."""
        if not images.is_floating_point() or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected float images [B, 3, H, W] in [0, 1], got {images.dtype} {tuple(images.shape)}"
            )
        stages = self.backbone((images - self.mean) / self.std)
        levels = self.fpn(stages) if (self.runs_fpn if pyramid is None else pyramid) else OrderedDict()
        return Features((int(images.shape[-2]), int(images.shape[-1])), stages, levels)

    def task_features(self, name: str, features: Features) -> Features:
        """What task ``name`` reads of a trunk pass: the features themselves here; a subclass may
        adapt them per task (e.g. Doersch & Zisserman's lasso mixing of the trunk's stages)."""
        return features

    def features_for(self, name: str, track_statistics: bool = True) -> Callable[[Tensor], Features]:
        """The trunk as self-supervised task ``name`` runs it on its views; ``track_statistics=False``
        leaves the trunk's batch-norm running averages to the supervised pass (views still
        normalize by their own batch, :mod:`must.models.running_statistics`). The FPN runs on the
        views only if the task's head reads it (a view pass is never shared with another head)."""
        pyramid = reads_pyramid(self.head_of(name))

        def features(images: Tensor) -> Features:
            with running_statistics_frozen(self.backbone, self.fpn, frozen=not track_statistics):
                trunk = self.features(images, pyramid)
            return self.task_features(name, trunk)
        return features

    def forward(self, images: Tensor | None, targets: Mapping[str, TaskBatch] | None = None,
                tasks: Sequence[str] | None = None) -> dict[str, Any]:
        """Runs the heads of ``tasks`` (default: all) on one shared trunk pass; each head gets its
        task's targets when given (detection computes its losses inside ``forward``).
        Self-supervised tasks run the trunk on their views (their targets) instead; when only
        they are asked for, the pass over ``images`` is skipped (``images`` may be ``None``).
        Batch-norm running averages follow the supervised pass when there is one (views then
        leave them alone), the views otherwise (self-supervised pre-training)."""
        names = self.task_names if tasks is None else list(tasks)
        unknown = [name for name in names if name not in self.heads and name not in self.view_tasks]
        if unknown:
            raise KeyError(f"model has no head for task(s) {unknown}; its heads: {self.task_names}")
        features = None
        if any(name not in self.view_tasks for name in names):
            if images is None:
                raise ValueError("the batch images are needed by the tasks "
                                 f"{[name for name in names if name not in self.view_tasks]}")
            features = self.features(images)
        outputs: dict[str, Any] = {}
        for name in names:
            target = targets.get(name) if targets else None
            task = self.view_tasks.get(name)
            if task is not None:
                trunk = self.features_for(name, track_statistics=features is None)
                outputs[name] = task.forward_views(self.heads[task.head_name], trunk, target)
            else:
                outputs[name] = self.heads[name](self.task_features(name, features), target)
        return outputs


def reads_pyramid(head: nn.Module) -> bool:
    """Whether ``head`` reads the FPN pyramid: a head says so with a ``reads_pyramid`` attribute;
    without one, every head but the classification head (global pool of C5) is assumed to."""
    return bool(getattr(head, "reads_pyramid", not isinstance(head, ClassificationHead)))


def reads_fused_p2(head: nn.Module) -> bool:
    """Whether ``head`` reads fused P2 (a pixel head): it says so with a ``reads_fused_p2``
    attribute (:class:`~must.models.heads.PixelHead` does)."""
    return bool(getattr(head, "reads_fused_p2", False))


def feature_spec(backbone: ResNetBackbone, fpn: FeaturePyramid) -> FeatureSpec:
    """What heads are built for: C5 and C2..C5 channels, the pyramid width."""
    return FeatureSpec(c5_channels=backbone.stage_channels[-1], fpn_channels=fpn.channels,
                       stage_channels=tuple(backbone.stage_channels))


def build_model(config: ModelConfig, tasks: Mapping[str, Task]) -> MultiTaskModel:
    """Backbone + FPN from ``config``, one head per task (``task.build_head(spec)``), then the
    initial weights of ``config.init`` if set (MuST sec. 3.5 transfer, sec. 4.4 bootstrapping).

    Self-supervised tasks get one head per distinct ``head_name`` (FixMatch shares the head of the
    task it wraps, built by that task when it is present) and are passed to the model as its
    ``view_tasks``."""
    backbone = build_backbone(config.backbone, config.width, config.norm, config.drop_path_rate)
    fpn = FeaturePyramid(backbone.stage_channels, config.fpn_channels)
    spec = feature_spec(backbone, fpn)
    view_tasks = {name: task for name, task in tasks.items() if task.makes_views}
    heads = {name: task.build_head(spec) for name, task in tasks.items() if name not in view_tasks}
    for task in view_tasks.values():
        if task.head_name not in heads:
            heads[task.head_name] = task.build_head(spec)
    model = MultiTaskModel(backbone, fpn, heads, config.mean, config.std, view_tasks, config.sync_bn)
    if config.init is not None:
        load_initial_weights(model, config.init, heads=config.init_heads)
    return model


def _channel_vector(values: Sequence[float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)
