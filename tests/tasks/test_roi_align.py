"""Our RoIAlign against torchvision's: values and gradients, single level and the FPN pyramid."""

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as torchvision_roi_align

from must.tasks.roi_align import SMALL_MAP, PyramidRoIAlign, roi_align


def _boxes(generator, count, image_size, spill=0.0):
    """Random xyxy boxes, some tiny (under a pixel), some reaching ``spill`` beyond the image."""
    low = -spill * image_size
    corner = torch.rand(count, 2, generator=generator) * image_size * 0.9 + low
    size = torch.rand(count, 2, generator=generator) * image_size * 0.6
    size[: count // 8] *= 0.01
    return torch.cat([corner, corner + size], dim=1)


@pytest.mark.parametrize("map_size,spill", [(16, 0.0), (16, 0.3), (32, 0.0), (9, 0.2)])
def test_values_and_gradients_match_torchvision(map_size, spill):
    generator = torch.Generator().manual_seed(map_size)
    image_size = 4 * map_size
    features = torch.randn(3, 5, map_size, map_size + 3, generator=generator, requires_grad=True)
    boxes = _boxes(generator, 40, image_size, spill)
    image = torch.tensor([0] * 10 + [2] * 30, dtype=torch.float32)[:, None]  # image 1 has none
    rois = torch.cat([image, boxes], dim=1)
    ours = roi_align(features, rois, (7, 7), 0.25, 2)
    theirs = torchvision_roi_align(features, rois, (7, 7), 0.25, 2, aligned=False)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    weights = torch.randn(theirs.shape, generator=generator)
    ours_grad, = torch.autograd.grad((ours * weights).sum(), features)
    theirs_grad, = torch.autograd.grad((theirs * weights).sum(), features)
    torch.testing.assert_close(ours_grad, theirs_grad, atol=1e-4, rtol=1e-4)


def test_large_maps_and_adaptive_sampling_go_to_torchvision():
    generator = torch.Generator().manual_seed(0)
    side = int(SMALL_MAP ** 0.5) + 1
    features = torch.randn(1, 2, side, side, generator=generator)
    rois = torch.cat([torch.zeros(6, 1), _boxes(generator, 6, side)], dim=1)
    for ratio, map_ in [(2, features), (0, features[..., :8, :8])]:
        expected = torchvision_roi_align(map_, rois, (3, 3), 1.0, ratio, aligned=False)
        assert torch.equal(roi_align(map_, rois, (3, 3), 1.0, ratio), expected)


def test_no_rois_gives_an_empty_batch():
    assert roi_align(torch.randn(2, 4, 8, 8), torch.zeros(0, 5), (7, 7), 1.0, 2).shape == (0, 4, 7, 7)


def test_pyramid_matches_torchvision_multiscale_roi_align():
    generator = torch.Generator().manual_seed(1)
    image_size = 512
    pyramid = OrderedDict((f"p{level}", torch.randn(2, 4, image_size >> level, image_size >> level,
                                                    generator=generator, requires_grad=True))
                          for level in (2, 3, 4, 5))
    sides = torch.tensor([6.0, 60.0, 150.0, 300.0, 480.0]).repeat(4)  # FPN eq. 1 maps these to P2..P5
    corner = torch.rand(len(sides), 2, generator=generator) * (image_size - sides)[:, None]
    every = torch.cat([corner, corner + sides[:, None]], dim=1)
    boxes = [every[:7], every[7:]]
    names = list(pyramid)
    ours = PyramidRoIAlign(names, 7, 2)(pyramid, boxes, [(image_size, image_size)] * 2)
    theirs = MultiScaleRoIAlign(names, 7, 2)(pyramid, boxes, [(image_size, image_size)] * 2)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    ours_grads = torch.autograd.grad(ours.square().sum(), list(pyramid.values()))
    theirs_grads = torch.autograd.grad(theirs.square().sum(), list(pyramid.values()))
    for a, b in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_autocast_pools_in_float32_and_returns_the_input_dtype():
    generator = torch.Generator().manual_seed(2)
    features = torch.randn(1, 3, 8, 8, generator=generator).bfloat16()
    rois = torch.cat([torch.zeros(4, 1), _boxes(generator, 4, 8)], dim=1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = roi_align(features, rois, (7, 7), 1.0, 2)
    expected = torchvision_roi_align(features.float(), rois, (7, 7), 1.0, 2, aligned=False)
    assert pooled.dtype == torch.bfloat16
    torch.testing.assert_close(pooled.float(), expected, atol=2e-2, rtol=2e-2)
