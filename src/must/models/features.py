"""What heads read from the shared trunk: C5, the FPN pyramid, and fused P2 (MuST sec. 3.3)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class FeatureSpec:
    """Shapes a head is built for."""

    c5_channels: int
    fpn_channels: int
    levels: tuple[str, ...] = ("p2", "p3", "p4", "p5", "p6", "p7")
    strides: dict[str, int] = field(
        default_factory=lambda: {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
    )
    stage_channels: tuple[int, ...] = ()
    """Channels of C2..C5 (for heads that read the trunk directly, e.g. Doersch's lasso)."""


class Features:
    """One forward pass of backbone + FPN, shared by every head."""

    def __init__(self, image_size: tuple[int, int], stages: OrderedDict[str, Tensor],
                 pyramid: OrderedDict[str, Tensor], level_weights: Mapping[str, Tensor] | None = None) -> None:
        self.image_size = image_size
        self.stages = stages
        self.pyramid = pyramid
        self.level_weights = level_weights
        """Per-level scalars of :attr:`fused_p2` (a task's lasso row); None = the plain sum."""

    def with_level_weights(self, weights: Mapping[str, Tensor]) -> Features:
        """The same features, with :attr:`fused_p2` the ``weights``-weighted sum of the levels
        (Doersch & Zisserman sec. 4.2's per-task selection, :class:`must.models.lasso.PyramidLasso`)."""
        return Features(self.image_size, self.stages, self.pyramid, weights)

    @classmethod
    def random(cls, spec: FeatureSpec, batch: int, size: tuple[int, int] = (32, 32),
               generator: torch.Generator | None = None) -> Features:
        """Random C5 and pyramid with the shapes a ResNet-FPN gives for ``size`` images (each
        level ``ceil(size / stride)``, at least 1): exercises a head or task without a trunk."""
        height, width = size

        def side(length: int, stride: int) -> int:
            return max(1, -(-length // stride))

        pyramid = OrderedDict((level, torch.randn(batch, spec.fpn_channels, side(height, stride), side(width, stride),
                                                  generator=generator))
                              for level, stride in spec.strides.items() if level in spec.levels)
        stages = OrderedDict(c5=torch.randn(batch, spec.c5_channels, side(height, 32), side(width, 32),
                                            generator=generator))
        return cls(size, stages, pyramid)

    @property
    def c5(self) -> Tensor:
        return self.stages["c5"]

    @cached_property
    def fused_p2(self) -> Tensor:
        """All pyramid levels upsampled to P2's resolution and summed (MuST sec. 3.3: "we
        upsample all feature levels to P2 and sum them"), each level scaled by :attr:`level_weights`
        when set. Computed once, read by every pixel head of these features."""
        p2 = self.pyramid["p2"]
        weights = self.level_weights
        # Weighted in the same order as the plain sum: weights of 1 give today's tensor bit for bit.
        fused = p2 if weights is None else weights["p2"] * p2
        for name, level in self.pyramid.items():
            if name == "p2":
                continue
            upsampled = F.interpolate(level, size=p2.shape[-2:], mode="bilinear", align_corners=False)
            fused = fused + (upsampled if weights is None else weights[name] * upsampled)
        return fused

    def select(self, index: Tensor) -> Features:
        """The features of a subset of the batch (e.g. the images that have a detection target)."""
        return Features(
            self.image_size,
            OrderedDict((k, v[index]) for k, v in self.stages.items()),
            OrderedDict((k, v[index]) for k, v in self.pyramid.items()),
            self.level_weights,
        )

    @property
    def batch_size(self) -> int:
        return int(next(iter(self.pyramid.values())).shape[0])

    @property
    def device(self) -> torch.device:
        return next(iter(self.pyramid.values())).device
