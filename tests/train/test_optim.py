"""Optimizer parameter groups, the warmup + cosine schedule, and the weight EMA."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from must.train.config import TrainConfig
from must.train.optim import build_ema, build_optimizer, build_scheduler, lr_factor, parameter_groups


def test_no_weight_decay_on_norms_biases_and_extra_parameters() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    extra = nn.Parameter(torch.zeros(()))
    decay, no_decay = parameter_groups(model, 1e-4, [extra])
    assert {id(p) for p in decay["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert decay["weight_decay"] == 1e-4 and no_decay["weight_decay"] == 0.0
    assert len(no_decay["params"]) == 5 and any(p is extra for p in no_decay["params"])
    assert isinstance(build_optimizer(model, TrainConfig(optimizer="adamw")), torch.optim.AdamW)


def test_warmup_then_cosine_to_zero() -> None:
    assert [lr_factor(s, 4, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 4, 12) == 1.0
    assert lr_factor(8, 4, 12) == pytest.approx(0.5)
    assert lr_factor(12, 4, 12) == pytest.approx(0.0)
    assert lr_factor(6, 0, 12) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    model = nn.Linear(2, 2)
    config = TrainConfig(steps=10, lr=0.2, warmup_steps=2)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config)
    rates = []
    for _ in range(10):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[:3] == pytest.approx([0.1, 0.2, 0.2]) and rates[-1] < 0.01


def test_ema_follows_the_formula() -> None:
    model = nn.Linear(1, 1, bias=False)
    ema = build_ema(model, 0.75)
    values = [1.0, 2.0, 4.0]
    for value in values:
        model.weight.data.fill_(value)
        ema.update_parameters(model)
    # the first update copies the weights; then ema <- 0.75 ema + 0.25 w
    expected = 0.75 * (0.75 * 1.0 + 0.25 * 2.0) + 0.25 * 4.0
    assert ema.module.weight.item() == pytest.approx(expected)
    assert build_ema(model, None) is None


def _tiny_multitask(backbone_name: str, width: float = 1.0):
    from must.models import FeatureSpec, MultiTaskModel, build_backbone
    from must.models.fpn import FeaturePyramid

    backbone = build_backbone(backbone_name, width)
    fpn = FeaturePyramid(backbone.stage_channels, 8)
    return MultiTaskModel(backbone, fpn, {"classify": nn.Linear(FeatureSpec(backbone.stage_channels[-1], 8).c5_channels, 3)})


@pytest.mark.parametrize("name, width, layers", [("resnet18", 0.25, 8), ("timm:vit_tiny_patch16_224", 1.0, 12)])
def test_layer_decay_scales_each_backbone_layer_and_leaves_fpn_and_heads_at_the_full_rate(name, width, layers) -> None:
    model = _tiny_multitask(name, width)
    optimizer = build_optimizer(model, TrainConfig(lr=0.1, layer_decay=0.5))
    build_scheduler(optimizer, TrainConfig(lr=0.1, layer_decay=0.5))
    rate = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    parameters = dict(model.named_parameters())
    stem = "backbone.conv1.weight" if name == "resnet18" else "backbone.trunk.patch_embed.proj.weight"
    last = "backbone.layer4.1.conv2.weight" if name == "resnet18" else "backbone.trunk.blocks.11.mlp.fc2.weight"
    # L = layers + 1 levels under the FPN: the stem is layer 0, block i is layer i + 1.
    assert rate[id(parameters[stem])] == pytest.approx(0.1 * 0.5 ** (layers + 1))
    assert rate[id(parameters[last])] == pytest.approx(0.1 * 0.5)
    for key in ("fpn.layer_blocks.0.0.weight", "heads.classify.weight"):
        assert rate[id(parameters[key])] == pytest.approx(0.1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # the rate the engine logs
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(parameters)


def test_vit_position_embedding_and_class_token_get_no_weight_decay() -> None:
    model = _tiny_multitask("timm:vit_tiny_patch16_224")
    decayed = {id(p) for group in parameter_groups(model, 0.05) if group["weight_decay"] > 0 for p in group["params"]}
    for name in ("backbone.trunk.pos_embed", "backbone.trunk.cls_token"):
        assert id(dict(model.named_parameters())[name]) not in decayed
    assert id(model.backbone.trunk.blocks[0].attn.qkv.weight) in decayed


def test_layer_decay_must_be_in_zero_one() -> None:
    with pytest.raises(ValueError, match="layer_decay"):
        TrainConfig(layer_decay=0.0)


class _Mixing(nn.Module):
    """A module that exempts its 2-D mixing matrix, as the lasso does (its L1 penalty is its
    only regularizer, Doersch & Zisserman 2017 sec. 4.2)."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(2, 3))
        self.projection = nn.Conv2d(3, 3, 1)

    def no_weight_decay(self) -> set[str]:
        return {"alpha"}


def test_any_submodule_may_exempt_its_parameters_from_weight_decay() -> None:
    model = nn.Module()
    model.lasso = _Mixing()
    model.head = nn.Linear(3, 2)
    decay = {id(p) for group in parameter_groups(model, 1e-4) if group["weight_decay"] > 0 for p in group["params"]}
    assert id(model.lasso.alpha) not in decay
    assert decay == {id(model.lasso.projection.weight), id(model.head.weight)}
