"""Fused P2 (MuST sec. 3.3: "we upsample all feature levels to P2 and sum them") against a hand
computation: bilinear upsampling written out as interpolation matrices, every level summed."""

from __future__ import annotations

import math
from collections import OrderedDict

import torch

from must.models.features import Features, FeatureSpec


def bilinear_matrix(source: int, target: int) -> torch.Tensor:
    """``[target, source]`` weights of 1-D linear upsampling with half-pixel centres (each output
    pixel centre ``(i + 0.5) * source / target - 0.5`` in input pixels, clamped at the border)."""
    weights = torch.zeros(target, source, dtype=torch.float64)
    for index in range(target):
        position = max((index + 0.5) * source / target - 0.5, 0.0)
        low = min(int(math.floor(position)), source - 1)
        high = min(low + 1, source - 1)
        fraction = position - low
        weights[index, low] += 1.0 - fraction
        weights[index, high] += fraction
    return weights


def _features(pyramid: OrderedDict[str, torch.Tensor]) -> Features:
    return Features((0, 0), OrderedDict(c5=torch.zeros(1)), pyramid)


def test_fused_p2_of_a_two_level_pyramid_by_hand() -> None:
    """P3 = [[0, 4], [8, 12]] upsampled to 4x4: columns 0, 1, 3, 4 and rows 0, 2, 6, 8 (linear in
    x and y, so each value is the sum of its row's and column's); P2 = 1 everywhere."""
    p3 = torch.tensor([[0.0, 4.0], [8.0, 12.0]])[None, None]
    fused = _features(OrderedDict(p2=torch.ones(1, 1, 4, 4), p3=p3)).fused_p2
    rows, cols = torch.tensor([0.0, 2, 6, 8]), torch.tensor([0.0, 1, 3, 4])
    assert torch.equal(fused[0, 0], 1 + rows[:, None] + cols[None, :])


def test_fused_p2_sums_every_level_upsampled_bilinearly() -> None:
    """Random P2..P7 of a 36x52 image (levels of ``ceil(size / stride)``): dropping a level or
    another interpolation mode changes the value."""
    spec = FeatureSpec(c5_channels=4, fpn_channels=3)
    features = Features.random(spec, batch=2, size=(36, 52), generator=torch.Generator().manual_seed(0))
    p2 = features.pyramid["p2"].double()
    height, width = p2.shape[-2:]
    assert (height, width) == (9, 13) and len(features.pyramid) == 6
    expected = p2.clone()
    for name, level in features.pyramid.items():
        if name != "p2":
            rows = bilinear_matrix(level.shape[-2], height)
            cols = bilinear_matrix(level.shape[-1], width)
            expected += rows @ level.double() @ cols.T
    torch.testing.assert_close(features.fused_p2.double(), expected, atol=1e-5, rtol=0)
    assert features.fused_p2 is features.fused_p2  # computed once, read by every pixel head
