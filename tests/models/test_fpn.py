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


def _p6_p7_gradients(fpn: FeaturePyramid, stages: OrderedDict, bf16: bool) -> dict[str, torch.Tensor]:
    fpn.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        pyramid = fpn(stages)
    sum(level.float().square().mean() for level in pyramid.values()).backward()
    return {name: parameter.grad.clone() for name, parameter in fpn.named_parameters()
            if name.startswith("extra_blocks.")}


@pytest.mark.parametrize("channels", [16, 32])
def test_p6_p7_gradients_under_bf16_autocast_match_fp32(channels):
    # oneDNN (torch 2.14.1) returns garbage bf16 weight gradients for a 3x3 stride-2 conv on a 1x1
    # input (16 channels triggers it): P7 on a 64 px image. The FPN runs P6 / P7 in fp32.
    torch.manual_seed(0)
    fpn = FeaturePyramid(STAGE_CHANNELS, channels=channels)
    stages = fake_stages(64, 64, batch=4)
    reference = _p6_p7_gradients(fpn, stages, bf16=False)
    mixed = _p6_p7_gradients(fpn, stages, bf16=True)
    assert set(mixed) == {"extra_blocks.p6.weight", "extra_blocks.p6.bias", "extra_blocks.p7.weight",
                          "extra_blocks.p7.bias"}
    for name, gradient in mixed.items():
        assert torch.isfinite(gradient).all(), name
        # bf16 elsewhere in the pyramid (P5 feeds P6) leaves a ~1% difference, never more
        torch.testing.assert_close(gradient, reference[name], rtol=0.05, atol=0.05 * reference[name].abs().max().item())


def test_pyramid_levels_keep_the_autocast_dtype():
    fpn = FeaturePyramid(STAGE_CHANNELS, channels=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pyramid = fpn(fake_stages(64, 64))
    assert {level.dtype for level in pyramid.values()} == {torch.bfloat16}


@pytest.mark.parametrize("stage_channels", [(40, 80, 160, 320), (8, 16, 24, 288), (48, 96, 192, 192)])
def test_pyramid_adapts_to_any_backbones_channel_counts(stage_channels):
    # ConvNeXt-atto, MobileNetV3-small-0.5 and ViT-tiny + simple feature pyramid: C2..C5 widths
    # that are not a ResNet's doubling.
    fpn = FeaturePyramid(stage_channels, channels=16)
    stages = OrderedDict((f"c{level}", torch.rand(1, channels, 64 // 2**level, 64 // 2**level))
                         for level, channels in zip(range(2, 6), stage_channels))
    assert [inner[0].in_channels for inner in fpn.inner_blocks] == list(stage_channels)
    assert {level.shape[1] for level in fpn(stages).values()} == {16}
