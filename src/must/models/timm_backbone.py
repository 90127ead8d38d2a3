"""Any timm CNN as the trunk of the ResNet-FPN recipe (MuST sec. 3.3 with another backbone; the
paper's own bootstrap starts from ALIGN's EfficientNet, Table 7).

timm describes every model's feature levels in ``feature_info`` (channels and stride of each) and
returns them from ``forward_intermediates``, the API its ``features_only`` wrapper is built on. The
trunk keeps the deepest level at each of the strides 4, 8, 16 and 32 as C2..C5, and
``prune_intermediate_layers`` drops what lies after C5 (classifier, final conv / norm). The timm
model stays whole under ``trunk``, with timm's own parameter names, so a timm state dict of the same
model loads key for key (:meth:`TimmBackbone.classifier_state`).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING

from torch import Tensor, nn

from must.errors import ConfigError

if TYPE_CHECKING:
    from must.models.backbone import Norm

STRIDES = (4, 8, 16, 32)
STAGE_NAMES = ("c2", "c3", "c4", "c5")


class TimmBackbone(nn.Module):
    """``forward(images) -> OrderedDict(c2..c5)`` from a timm model's feature levels at strides
    4, 8, 16, 32; ``stage_channels`` are read from timm's ``feature_info``."""

    def __init__(self, trunk: nn.Module, name: str) -> None:
        super().__init__()
        self.name = name
        self.indices = stride_indices(trunk, name)
        before = set(trunk.state_dict())
        trunk.prune_intermediate_layers(self.indices, prune_norm=True, prune_head=True)
        self.trunk = trunk
        self.pruned_keys = frozenset(before - set(trunk.state_dict()))
        """Keys of the timm classifier that the trunk no longer has (head, final conv / norm)."""
        self.stage_channels = tuple(int(trunk.feature_info[index]["num_chs"]) for index in self.indices)

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        levels = self.trunk.forward_intermediates(images, indices=self.indices, intermediates_only=True)
        return OrderedDict(zip(STAGE_NAMES, levels))

    def classifier_state(self, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """A timm state dict of this model mapped onto this module's keys, and the keys left out
        (the layers after C5, which the trunk does not have)."""
        kept = {f"trunk.{key}": value for key, value in state.items() if key not in self.pruned_keys}
        skipped = [f"{key} (after C5: not part of the trunk)" for key in state if key in self.pruned_keys]
        return kept, skipped

    def parameter_layers(self) -> dict[str, int]:
        """Depth index of every trunk parameter (0 = stem), from timm's own ``group_matcher``
        (what timm's layer-wise learning-rate decay uses)."""
        from timm.models._manipulate import group_parameters

        layers = group_parameters(self.trunk, self.trunk.group_matcher(coarse=False), reverse=True)
        return {f"trunk.{name}": layer for name, layer in layers.items()}

    def no_weight_decay(self) -> set[str]:
        """Parameters timm exempts from weight decay (a ViT's position embedding and class token)."""
        names = self.trunk.no_weight_decay() if hasattr(self.trunk, "no_weight_decay") else set()
        return {f"trunk.{name}" for name in names}


def stride_indices(trunk: nn.Module, name: str) -> list[int]:
    """Indices into ``trunk.feature_info`` of the deepest level at each of strides 4, 8, 16, 32."""
    strides = [int(level["reduction"]) for level in trunk.feature_info]
    missing = [stride for stride in STRIDES if stride not in strides]
    if missing:
        raise ConfigError(f"backbone '{name}' has feature levels at strides {strides} (timm's feature_info); "
                          f"the FPN needs levels at strides 4, 8, 16 and 32 (missing {missing})")
    return [max(index for index, stride in enumerate(strides) if stride == wanted) for wanted in STRIDES]


def convert_norms(trunk: nn.Module, norm: Norm, name: str) -> nn.Module:
    """``norm`` for the trunk's BatchNorm layers (timm's fused BatchNorm + activation included):
    ``batch`` keeps them, ``frozen_batch`` freezes them (timm's ``freeze_batch_norm_2d``),
    ``group`` swaps each for a GroupNorm of 32 groups (Wu & He 2018; fewer on narrow layers) with
    the same activation. Trunks that normalize with LayerNorm (ConvNeXt, ViT) keep theirs: asking
    them for another norm is an error rather than a silent no-op."""
    if norm == "batch":
        return trunk
    if not any(isinstance(module, nn.BatchNorm2d) for module in trunk.modules()):
        raise ConfigError(f"model.norm={norm}: backbone '{name}' has no BatchNorm layers to replace "
                          "(it keeps its own LayerNorms); use norm=batch")
    if norm == "frozen_batch":
        from timm.layers import freeze_batch_norm_2d

        return freeze_batch_norm_2d(trunk)
    if norm == "group":
        return _to_group_norm(trunk)
    raise ConfigError(f"unknown norm '{norm}'; choose one of: batch, frozen_batch, group")


def _to_group_norm(module: nn.Module) -> nn.Module:
    from timm.layers import BatchNormAct2d, GroupNormAct

    if isinstance(module, BatchNormAct2d):
        channels = module.num_features
        converted: nn.Module = GroupNormAct(channels, math.gcd(32, channels), eps=module.eps,
                                            affine=module.affine, apply_act=False)
        converted.act, converted.drop = module.act, module.drop  # the activation fused with the norm
        return converted
    if isinstance(module, nn.BatchNorm2d):
        return nn.GroupNorm(math.gcd(32, module.num_features), module.num_features, eps=module.eps,
                            affine=module.affine)
    for child_name, child in module.named_children():
        converted_child = _to_group_norm(child)
        if converted_child is not child:
            setattr(module, child_name, converted_child)
    return module
