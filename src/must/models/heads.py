"""Task heads on the shared ResNet-FPN features (MuST sec. 3.3).

* :class:`ClassificationHead`: global average pooling of C5 and a linear layer (the ResNet
  design), with optional dropout before the linear layer (Noisy Student's model noise, Xie et al.
  2020).
* :class:`PixelHead`: for every pixel task (segmentation, depth, normals) 3 hidden convs + 1
  linear conv on fused P2, upsampled to the input size. Each pixel task builds its own instance:
  segmentation and depth do not share heads.

Normalization is :class:`torch.nn.GroupNorm`, not BatchNorm, because batch statistics are wrong
for how these heads are trained: per-device batches are tiny (CPU runs, DDP with a few images per
GPU) and MuST batches mix images from several datasets, so BatchNorm's running averages would
describe a mixture that no single evaluation set has. GroupNorm computes the same thing in
training and evaluation for every image alone, so a teacher's pseudo labels do not depend on which
images shared its batch, and no SyncBatchNorm is needed under DDP.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from must.data.sample import TaskBatch
from must.models.features import Features


def group_count(channels: int, max_groups: int = 32) -> int:
    """GroupNorm's usual 32 groups (Wu & He 2018), reduced to a divisor of ``channels``."""
    return math.gcd(channels, max_groups)


class ClassificationHead(nn.Module):
    """Global average pool of C5 + dropout + linear: ``[B, C5, h, w] -> [B, num_classes]`` logits."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_channels, num_classes)
        # Small initial logits: the first loss is ~log(K) whatever the feature scale.
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        pooled = features.c5.mean(dim=(-2, -1))
        return self.linear(self.dropout(pooled))


class PixelHead(nn.Module):
    """``num_hidden`` x (3x3 conv + GroupNorm + ReLU), a 1x1 linear conv, bilinear upsampling to
    the input image size, then ``activation`` (e.g. softplus for depth). Output ``[B, out, H, W]``.

    The activation runs after upsampling so its guarantee (positive depth, unit normals) holds at
    every output pixel, not only at P2's.
    """

    reads_fused_p2 = True
    """What the head reads (:func:`must.models.multitask.reads_fused_p2`): a per-task lasso over
    the pyramid levels applies to it."""

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int,
                 num_hidden: int = 3, activation: nn.Module | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(num_hidden):
            layers += [
                nn.Conv2d(channels, hidden_channels, 3, padding=1, bias=False),
                nn.GroupNorm(group_count(hidden_channels), hidden_channels),
                nn.ReLU(inplace=True),
            ]
            channels = hidden_channels
        self.hidden = nn.Sequential(*layers)
        self.predictor = nn.Conv2d(channels, out_channels, 1)
        self.activation = activation if activation is not None else nn.Identity()
        for module in self.hidden:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        logits = self.predictor(self.hidden(features.fused_p2))
        if tuple(logits.shape[-2:]) != tuple(features.image_size):
            logits = F.interpolate(logits, size=features.image_size, mode="bilinear", align_corners=False)
        return self.activation(logits)


class UnitNormalize(nn.Module):
    """L2-normalizes along the channel axis (surface normals are unit vectors)."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=1, eps=self.eps)
