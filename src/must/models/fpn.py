"""Feature pyramid P2..P7 on C2..C5 (MuST sec. 3.3; Lin et al. 2017, "Feature Pyramid Networks").

torchvision's :class:`~torchvision.ops.FeaturePyramidNetwork` builds P2..P5 (lateral 1x1 convs,
top-down nearest upsampling, 3x3 output convs); its RetinaNet extra block
:class:`~torchvision.ops.feature_pyramid_network.LastLevelP6P7` adds P6 and P7 by stride-2 3x3
convs. MuST's detection head reads P3..P7 and its pixel heads read P2..P7 fused at P2.

P6 and P7 always run in fp32, even under bf16 autocast: torch 2.14.1's oneDNN returns garbage
(huge or NaN) bf16 weight gradients for a 3x3 stride-2 convolution on a 1x1 input, which is what
P7 (and P6) see on small images. These two levels are a negligible share of the FLOPs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

LEVELS = ("p2", "p3", "p4", "p5", "p6", "p7")


class FullPrecisionP6P7(LastLevelP6P7):
    """torchvision's RetinaNet P6 / P7 block computed in fp32 with autocast off; the outputs are
    cast back to the input's dtype so every pyramid level keeps the same dtype."""

    def forward(self, p: list[Tensor], c: list[Tensor], names: list[str]) -> tuple[list[Tensor], list[str]]:
        source = p[-1] if self.use_P5 else c[-1]
        with torch.autocast(source.device.type, enabled=False):
            p6 = self.p6(source.float())
            p7 = self.p7(F.relu(p6))
        p.extend([p6.to(source.dtype), p7.to(source.dtype)])
        names.extend(["p6", "p7"])
        return p, names


class FeaturePyramid(FeaturePyramidNetwork):
    """``forward(OrderedDict(c2..c5)) -> OrderedDict(p2..p7)``, every level ``channels`` wide,
    at strides 4, 8, 16, 32, 64, 128 (each level is ``ceil`` of the previous size / 2)."""

    def __init__(self, stage_channels: Sequence[int], channels: int) -> None:
        if len(stage_channels) != 4:
            raise ValueError(f"FPN needs the channels of C2..C5, got {list(stage_channels)}")
        # P6 from P5 (in_channels == out_channels), as torchvision's RetinaNet v2 and FCOS do:
        # a 3x3 conv on a `channels`-wide map instead of on C5, which is up to 2048 wide.
        super().__init__(list(stage_channels), channels, extra_blocks=FullPrecisionP6P7(channels, channels))
        self.channels = channels

    def forward(self, stages: OrderedDict[str, Tensor]) -> OrderedDict[str, Tensor]:  # type: ignore[override]
        if len(stages) != 4:
            raise ValueError(f"FPN expects C2..C5, got levels {list(stages)}")
        # torchvision names each output after its input; renaming C_i -> P_i gives p2..p5, p6, p7.
        return super().forward(OrderedDict(zip(LEVELS[:4], stages.values())))
