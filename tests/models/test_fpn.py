"""FPN P2..P7 on C2..C5: level names, channels, strides 4..128, P6 from P5, gradients."""

import math
from collections import OrderedDict

import pytest
import torch

from must.models.features import FeatureSpec
from must.models.fpn import FeaturePyramid

STAGE_CHANNELS = (16, 32, 64, 128)


def fake_stages(height: int, width: int, batch: int = 2) -> OrderedDict:
    return OrderedDict(
        (f"c{level}", torch.rand(batch, channels, math.ceil(height / 2**level), math.ceil(width / 2**level)))
        for level, channels in zip(range(2, 6), STAGE_CHANNELS)
    )


@pytest.mark.parametrize("height, width", [(64, 64), (96, 64), (256, 320), (1000, 600)])
def test_pyramid_levels_strides_and_channels(height, width):
    fpn = FeaturePyramid(STAGE_CHANNELS, channels=24)
    pyramid = fpn(fake_stages(height, width))
    spec = FeatureSpec(c5_channels=128, fpn_channels=24)
    assert tuple(pyramid) == spec.levels
    for level, feature in pyramid.items():
        stride = spec.strides[level]
        assert feature.shape == (2, 24, math.ceil(height / stride), math.ceil(width / stride)), level


def test_p6_and_p7_are_computed_from_p5():
    fpn = FeaturePyramid(STAGE_CHANNELS, channels=24)
    pyramid = fpn(fake_stages(256, 256))
    p6 = fpn.extra_blocks.p6(pyramid["p5"])
    torch.testing.assert_close(pyramid["p6"], p6)
    torch.testing.assert_close(pyramid["p7"], fpn.extra_blocks.p7(torch.relu(p6)))


def test_every_parameter_gets_a_gradient():
    fpn = FeaturePyramid(STAGE_CHANNELS, channels=8)
    sum(level.square().mean() for level in fpn(fake_stages(128, 96)).values()).backward()
    for name, parameter in fpn.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_wrong_stage_count_fails():
    with pytest.raises(ValueError, match="C2..C5"):
        FeaturePyramid((16, 32, 64), channels=8)
    stages = fake_stages(64, 64)
    del stages["c2"]
    with pytest.raises(ValueError, match="C2..C5"):
        FeaturePyramid(STAGE_CHANNELS, channels=8)(stages)
