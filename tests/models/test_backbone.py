"""ResNet trunks by name: C2..C5 shapes and channels, narrow widths, norms, stochastic depth."""

import math

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d

from timm.layers import BatchNormAct2d, GroupNormAct

from must.models.backbone import NarrowResNet, build_backbone

VARIANTS = [
    ("resnet18", 1.0, (64, 128, 256, 512)),
    ("resnet50", 1.0, (256, 512, 1024, 2048)),
    ("timm:resnet18", 1.0, (64, 128, 256, 512)),
    ("resnet18", 0.25, (16, 32, 64, 128)),
    ("resnet50", 0.125, (32, 64, 128, 256)),
]


@pytest.mark.parametrize("name, width, channels", VARIANTS)
@pytest.mark.parametrize("height, width_px", [(64, 64), (96, 64)])
def test_stages_have_resnet_strides_and_channels(name, width, channels, height, width_px):
    backbone = build_backbone(name, width)
    stages = backbone(torch.rand(2, 3, height, width_px))
    assert list(stages) == ["c2", "c3", "c4", "c5"]
    assert backbone.stage_channels == channels
    for stage, stride, stage_channels in zip(stages.values(), (4, 8, 16, 32), channels):
        # Every stride-2 layer (conv, max pool) maps n to ceil(n / 2).
        assert stage.shape == (2, stage_channels, math.ceil(height / stride), math.ceil(width_px / stride))


@pytest.mark.parametrize("block, layers, reference", [
    (BasicBlock, (2, 2, 2, 2), torchvision.models.resnet18),
    (Bottleneck, (3, 4, 6, 3), torchvision.models.resnet50),
])
def test_narrow_resnet_at_width_one_is_torchvisions_resnet(block, layers, reference):
    ours = {key: value.shape for key, value in NarrowResNet(block, layers, 1.0).state_dict().items()}
    theirs = {key: value.shape for key, value in reference(weights=None).state_dict().items()}
    assert ours == theirs


def test_narrow_resnet_scales_the_stem_too():
    backbone = build_backbone("resnet18", width=0.25)
    assert backbone["conv1"].out_channels == 16
    assert backbone["layer1"][0].conv1.in_channels == 16


@pytest.mark.parametrize("name, width", [("resnet18", 0.25), ("timm:resnet18", 1.0)])
@pytest.mark.parametrize("norm, norm_type", [("group", nn.GroupNorm), ("frozen_batch", FrozenBatchNorm2d)])
def test_norm_layer_replaces_every_batch_norm(name, width, norm, norm_type):
    backbone = build_backbone(name, width, norm=norm)
    norms = [m for m in backbone.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, FrozenBatchNorm2d))]
    assert norms and all(isinstance(m, norm_type) for m in norms)
    stages = backbone(torch.rand(2, 3, 64, 64))
    assert torch.isfinite(stages["c5"]).all()


def test_frozen_norms_have_no_trainable_parameters_and_keep_residual_branches():
    backbone = build_backbone("timm:resnet18", norm="frozen_batch")
    assert not any("bn" in name for name, _ in backbone.named_parameters())
    # timm zero-initializes each block's last norm weight; frozen, that would kill the branch.
    assert torch.all(backbone["layer1"][0].bn2.weight == 1)


@pytest.mark.parametrize("name, width", [("resnet18", 0.25), ("timm:resnet18", 1.0)])
def test_stochastic_depth_drops_branches_in_training_only(name, width):
    plain = build_backbone(name, width)
    noisy = build_backbone(name, width, drop_path_rate=0.5)
    for module in plain.modules():  # timm zero-initializes the last norm: branches would add 0
        if isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
    noisy.load_state_dict(plain.state_dict())
    images = torch.rand(4, 3, 64, 64)
    plain.eval(), noisy.eval()
    torch.testing.assert_close(noisy(images)["c5"], plain(images)["c5"])
    plain.train(), noisy.train()
    assert not torch.allclose(noisy(images)["c5"], plain(images)["c5"])


def test_forward_with_blocks_returns_every_residual_unit():
    backbone = build_backbone("resnet18", width=0.25).eval()
    images = torch.rand(2, 3, 64, 64)
    stages, blocks = backbone.forward_with_blocks(images)
    assert len(blocks) == 8
    assert [b.shape[1] for b in blocks] == [16, 16, 32, 32, 64, 64, 128, 128]
    torch.testing.assert_close(blocks[-1], stages["c5"])
    torch.testing.assert_close(stages["c5"], backbone(images)["c5"])
    assert all(not unit._forward_hooks for unit in backbone.residual_units())


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "resnet19"}, "resnet18"),
    ({"name": "timm:no_such_model"}, "no_such_model"),
    ({"name": "timm:mixer_s16_224"}, "strides 4, 8, 16 and 32"),
    ({"name": "timm:convnext_atto", "norm": "group"}, "no BatchNorm"),
    ({"name": "timm:vit_tiny_patch16_224", "norm": "frozen_batch"}, "LayerNorm"),
    ({"name": "resnet18", "drop_path_rate": 1.0}, "drop_path_rate"),
])
def test_bad_backbone_arguments_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_backbone(**kwargs)


@pytest.mark.parametrize("name", ["timm:resnet18", "timm:mobilenetv3_small_050", "timm:vit_tiny_patch16_224"])
def test_width_is_ignored_for_timm_backbones(name):
    # The demo presets set width 0.25 for their torchvision ResNet; switching the backbone to a
    # timm model must not need a width reset.
    assert build_backbone(name, width=0.25).stage_channels == build_backbone(name).stage_channels


@pytest.mark.parametrize("norm, norm_type", [("group", nn.GroupNorm), ("frozen_batch", FrozenBatchNorm2d)])
@pytest.mark.parametrize("name", ["timm:efficientnet_b0", "timm:regnetx_002"])
def test_norm_choice_replaces_every_batch_norm_of_a_timm_cnn(name, norm, norm_type):
    from timm.layers import FrozenBatchNormAct2d

    backbone = build_backbone(name, norm=norm)
    assert not any(type(m) in (nn.BatchNorm2d, BatchNormAct2d) for m in backbone.modules())
    expected = (norm_type, FrozenBatchNormAct2d) if norm == "frozen_batch" else norm_type
    assert any(isinstance(m, expected) for m in backbone.modules())
    trainable_norms = [n for n, p in backbone.named_parameters() if p.ndim == 1 and "bn" in n]
    assert bool(trainable_norms) == (norm == "group")
    assert torch.isfinite(backbone(torch.rand(2, 3, 64, 64))["c5"]).all()


def test_group_norm_keeps_the_activation_timm_fused_into_the_batch_norm():
    batch = build_backbone("timm:efficientnet_b0")
    group = build_backbone("timm:efficientnet_b0", norm="group")
    assert isinstance(batch.trunk.bn1, BatchNormAct2d) and isinstance(group.trunk.bn1, GroupNormAct)
    assert type(group.trunk.bn1.act) is type(batch.trunk.bn1.act) is nn.SiLU
    assert group.trunk.bn1.num_groups == 32 and group.trunk.bn1.num_channels == 32
