"""Heads of MuST sec. 3.3: shapes, activations, gradients, per-image independence (GroupNorm)."""


import pytest
import torch
from torch import nn

from must.models.features import Features, FeatureSpec
from must.models.heads import ClassificationHead, PixelHead, UnitNormalize, group_count

SPEC = FeatureSpec(c5_channels=16, fpn_channels=8)


def make_features(batch: int = 2, size: tuple[int, int] = (32, 32)) -> Features:
    return Features.random(SPEC, batch, size)


def test_group_count_divides_channels() -> None:
    assert group_count(256) == 32
    assert group_count(48) == 16
    assert group_count(7) == 1
    for channels in range(1, 100):
        assert channels % group_count(channels) == 0


def test_classification_head_shape_and_dropout() -> None:
    head = ClassificationHead(SPEC.c5_channels, 5, dropout=0.5)
    features = make_features(3, (64, 64))
    assert head(features, None).shape == (3, 5)
    head.eval()
    assert torch.equal(head(features), head(features))
    head.train()
    assert not torch.equal(head(features), head(features))  # dropout is active in training


def test_classification_head_reads_pooled_c5() -> None:
    head = ClassificationHead(SPEC.c5_channels, 4)
    features = make_features(2, (64, 64))
    expected = features.c5.mean(dim=(2, 3)) @ head.linear.weight.T + head.linear.bias
    torch.testing.assert_close(head(features), expected)


@pytest.mark.parametrize("size", [(32, 32), (30, 45)])
def test_pixel_head_shape_and_structure(size: tuple[int, int]) -> None:
    head = PixelHead(SPEC.fpn_channels, 7, hidden_channels=16)
    assert head(make_features(2, size)).shape == (2, 7, *size)
    convs = [m for m in head.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 3 + [(1, 1)]  # 3 hidden + 1 linear
    assert sum(isinstance(m, nn.GroupNorm) for m in head.modules()) == 3


def test_pixel_head_activations() -> None:
    features = make_features(2)
    depth = PixelHead(SPEC.fpn_channels, 1, 8, activation=nn.Softplus())(features)
    assert (depth > 0).all()
    normals = PixelHead(SPEC.fpn_channels, 3, 8, activation=UnitNormalize())(features)
    torch.testing.assert_close(normals.norm(dim=1), torch.ones(2, 32, 32))


@pytest.mark.parametrize("head", [
    ClassificationHead(SPEC.c5_channels, 3, dropout=0.1),
    PixelHead(SPEC.fpn_channels, 4, 8),
    PixelHead(SPEC.fpn_channels, 3, 8, activation=UnitNormalize()),
])
def test_backward_reaches_every_parameter(head: nn.Module) -> None:
    output = head(make_features(2))
    assert torch.isfinite(output).all()
    (output * torch.randn_like(output)).sum().backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_pixel_head_output_does_not_depend_on_batch_companions() -> None:
    """GroupNorm normalizes each image alone: training-mode output of an image is the same in any
    batch (the reason the heads do not use BatchNorm)."""
    head = PixelHead(SPEC.fpn_channels, 2, 8).train()
    features = make_features(4)
    alone = head(features.select(torch.tensor([0])))
    together = head(features)[:1]
    torch.testing.assert_close(alone, together, rtol=1e-4, atol=1e-5)
