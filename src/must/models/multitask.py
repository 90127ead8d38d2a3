"""The multi-task model: one ResNet-FPN trunk shared by one head per task (MuST sec. 3.3).

``MultiTaskModel = backbone (C2..C5) + FPN (P2..P7) + {task name: head}``. The trunk runs once per
batch; every head reads the same :class:`~must.models.features.Features`. A specialized teacher
(MuST sec. 3.1) is the same class with one head; the student has one head per task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from must.data.sample import TaskBatch
from must.models.backbone import ResNetBackbone, build_backbone
from must.models.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig
from must.models.features import Features, FeatureSpec
from must.models.fpn import FeaturePyramid
from must.models.weights import load_initial_weights

if TYPE_CHECKING:  # must.tasks imports must.models: a runtime import here would be circular
    from must.tasks.base import Task


class MultiTaskModel(nn.Module):
    """``forward(images, targets, tasks) -> {task name: head output}``.

    ``images`` are ``float [B, 3, H, W]`` in ``[0, 1]``; the model normalizes them with its own
    ``mean`` / ``std`` so every stage (teacher, labeler, student) feeds the same thing.
    """

    def __init__(self, backbone: ResNetBackbone, fpn: FeaturePyramid, heads: Mapping[str, nn.Module],
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.backbone = backbone
        self.fpn = fpn
        self.heads = nn.ModuleDict(dict(heads))
        # Not persistent: normalization is config (saved next to the run), not learned weights,
        # so checkpoints stay loadable across configs that differ only in it.
        self.register_buffer("mean", _channel_vector(mean), persistent=False)
        self.register_buffer("std", _channel_vector(std), persistent=False)

    @property
    def spec(self) -> FeatureSpec:
        return feature_spec(self.backbone, self.fpn)

    @property
    def task_names(self) -> list[str]:
        return list(self.heads)

    def features(self, images: Tensor) -> Features:
        """Normalizes ``images`` and runs backbone + FPN once."""
        if not images.is_floating_point() or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(
                f"expected float images [B, 3, H, W] in [0, 1], got {images.dtype} {tuple(images.shape)}"
            )
        stages = self.backbone((images - self.mean) / self.std)
        return Features((int(images.shape[-2]), int(images.shape[-1])), stages, self.fpn(stages))

    def forward(self, images: Tensor, targets: Mapping[str, TaskBatch] | None = None,
                tasks: Sequence[str] | None = None) -> dict[str, Any]:
        """Runs the heads of ``tasks`` (default: all) on one shared trunk pass; each head gets its
        task's targets when given (detection computes its losses inside ``forward``)."""
        names = self.task_names if tasks is None else list(tasks)
        unknown = [name for name in names if name not in self.heads]
        if unknown:
            raise KeyError(f"model has no head for task(s) {unknown}; its heads: {self.task_names}")
        features = self.features(images)
        return {name: self.heads[name](features, targets.get(name) if targets else None) for name in names}


def feature_spec(backbone: ResNetBackbone, fpn: FeaturePyramid) -> FeatureSpec:
    """What heads are built for: C5 and C2..C5 channels, the pyramid width."""
    return FeatureSpec(c5_channels=backbone.stage_channels[-1], fpn_channels=fpn.channels,
                       stage_channels=tuple(backbone.stage_channels))


def build_model(config: ModelConfig, tasks: Mapping[str, Task]) -> MultiTaskModel:
    """Backbone + FPN from ``config``, one head per task (``task.build_head(spec)``), then the
    initial weights of ``config.init`` if set (MuST sec. 3.5 transfer, sec. 4.4 bootstrapping)."""
    backbone = build_backbone(config.backbone, config.width, config.norm, config.drop_path_rate)
    fpn = FeaturePyramid(backbone.stage_channels, config.fpn_channels)
    spec = feature_spec(backbone, fpn)
    heads = {name: task.build_head(spec) for name, task in tasks.items()}
    model = MultiTaskModel(backbone, fpn, heads, config.mean, config.std)
    if config.init is not None:
        load_initial_weights(model, config.init, heads=config.init_heads)
    return model


def _channel_vector(values: Sequence[float]) -> Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1)
