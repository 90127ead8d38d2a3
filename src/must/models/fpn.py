"""Feature pyramid P2..P7 on C2..C5 (MuST sec. 3.3; Lin et al. 2017, "Feature Pyramid Networks").

torchvision's :class:`~torchvision.ops.FeaturePyramidNetwork` builds P2..P5 (lateral 1x1 convs,
top-down nearest upsampling, 3x3 output convs); its RetinaNet extra block
:class:`~torchvision.ops.feature_pyramid_network.LastLevelP6P7` adds P6 and P7 by stride-2 3x3
convs. MuST's detection head reads P3..P7 and its pixel heads read P2..P7 fused at P2.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import Tensor
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

LEVELS = ("p2", "p3", "p4", "p5", "p6", "p7")


class FeaturePyramid(FeaturePyramidNetwork):
    """``forward(OrderedDict(c2..c5)) -> OrderedDict(p2..p7)``, every level ``channels`` wide,
    at strides 4, 8, 16, 32, 64, 128 (each level is ``ceil`` of the previous size / 2)."""

    def __init__(self, stage_channels: Sequence[int], channels: int) -> None:
        if len(stage_channels) != 4:
            raise ValueError(f"FPN needs the channels of C2..C5, got {list(stage_channels)}")
        # P6 from P5 (in_channels == out_channels), as torchvision's RetinaNet v2 and FCOS do:
        # a 3x3 conv on a `channels`-wide map instead of on C5, which is up to 2048 wide.
        super().__init__(list(stage_channels), channels, extra_blocks=LastLevelP6P7(channels, channels))
        self.channels = channels

    def forward(self, stages: OrderedDict[str, Tensor]) -> OrderedDict[str, Tensor]:  # type: ignore[override]
        if len(stages) != 4:
            raise ValueError(f"FPN expects C2..C5, got levels {list(stages)}")
        # torchvision names each output after its input; renaming C_i -> P_i gives p2..p5, p6, p7.
        return super().forward(OrderedDict(zip(LEVELS[:4], stages.values())))
