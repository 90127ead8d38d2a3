"""Frozen running statistics: batch norm normalizes as usual, its running averages stay."""

import pytest
import torch
from torch import nn

from must.models.running_statistics import running_statistics_frozen


def layers() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4, momentum=None))


def test_same_output_no_update_in_training() -> None:
    model, twin = layers().train(), layers().train()
    images = torch.randn(4, 3, 8, 8) * 3 + 1
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    with running_statistics_frozen(model):
        frozen = model(images)
    assert torch.allclose(frozen, twin(images))  # batch statistics, as in training
    for name, value in model.named_buffers():  # running mean, variance and batch count
        assert torch.equal(value, buffers[name]), name
    assert all(layer.track_running_stats for layer in model.modules() if isinstance(layer, nn.BatchNorm2d))
    model(images)
    assert not torch.equal(model[1].running_mean, buffers["1.running_mean"])


def test_not_frozen_and_restored_after_an_error() -> None:
    model = layers().train()
    before = model[1].running_mean.clone()
    with running_statistics_frozen(model, frozen=False):
        model(torch.randn(2, 3, 8, 8))
    assert not torch.equal(model[1].running_mean, before)
    with pytest.raises(RuntimeError), running_statistics_frozen(model):
        model(torch.randn(2, 5, 8, 8))  # wrong channel count
    assert model[1].track_running_stats and model[3].track_running_stats
