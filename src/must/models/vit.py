"""A plain ViT as a multi-scale trunk: the simple feature pyramid of ViTDet (Li, Mao, Girshick & He
2022, "Exploring Plain Vision Transformer Backbones for Object Detection", sec. 3 and Figure 2).

A ViT keeps one token map at stride 16 (its patch size) through every block. ViTDet builds the
pyramid from the last block alone: strides 4 and 8 by 2x2 stride-2 deconvolutions (two, with a
LayerNorm and GELU between them, for stride 4), stride 16 as is, stride 32 by 2x2 max pooling. The
maps become C2..C5 for the FPN (channels ``dim/4, dim/2, dim, dim``, as in ViTDet), so every
head reads a ViT trunk exactly as it reads a ResNet.

The position embedding is interpolated to each input's token grid (timm's ``dynamic_img_size``), so a
ViT made for 224 px runs at 64 px; inputs are padded on the right / bottom to a whole number of
patches (``dynamic_img_pad``) and each level is cropped back to ``ceil(size / stride)``, the size a
ResNet gives, so box coordinates keep the same strides.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from must.models.timm_backbone import STRIDES, TimmBackbone

VIT_MODULES = ("vision_transformer", "deit", "eva")
"""timm modules whose ViTs run at any input size (``dynamic_img_size``): ViT, DeiT, DINOv2, MAE,
EVA, SigLIP image towers..."""
TOKEN_STRIDE = 16


class SimpleFeaturePyramid(nn.Module):
    """``forward(tokens [B, dim, h, w]) -> OrderedDict(c2..c5)`` at 4x, 2x, 1x and 0.5x the
    token resolution (ViTDet sec. 3, "simple feature pyramid")."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        from timm.layers import LayerNorm2d

        self.c2 = nn.Sequential(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
                                nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2))
        self.c3 = nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)
        self.c5 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        self.channels = (dim // 4, dim // 2, dim, dim)

    def forward(self, tokens: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict(c2=self.c2(tokens), c3=self.c3(tokens), c4=tokens, c5=self.c5(tokens))


class VisionTransformerBackbone(TimmBackbone):
    """A timm ViT up to its last block (final norm and head pruned) + :class:`SimpleFeaturePyramid`.

    Parameter names: ``trunk.*`` are timm's (a timm state dict of the same model loads key for
    key), ``pyramid.*`` are new and start from their initialization."""

    def __init__(self, trunk: nn.Module, name: str) -> None:
        nn.Module.__init__(self)
        self.name = name
        self.indices = [len(trunk.blocks) - 1]
        before = set(trunk.state_dict())
        trunk.prune_intermediate_layers(self.indices, prune_norm=True, prune_head=True)
        self.trunk = trunk
        self.pruned_keys = frozenset(before - set(trunk.state_dict()))
        self.pyramid = SimpleFeaturePyramid(int(trunk.embed_dim))
        self.stage_channels = self.pyramid.channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        (tokens,) = self.trunk.forward_intermediates(images, indices=self.indices, intermediates_only=True)
        height, width = int(images.shape[-2]), int(images.shape[-1])
        grid = (_ceil_div(height, TOKEN_STRIDE), _ceil_div(width, TOKEN_STRIDE))
        if tuple(tokens.shape[-2:]) != grid:  # patch size other than 16 (e.g. DINOv2's 14)
            tokens = F.interpolate(tokens, size=grid, mode="bilinear", align_corners=False)
        levels = self.pyramid(tokens)
        return OrderedDict((name, level[..., :_ceil_div(height, stride), :_ceil_div(width, stride)])
                           for (name, level), stride in zip(levels.items(), STRIDES, strict=True))

    def classifier_state(self, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """As :meth:`TimmBackbone.classifier_state`, with the file's position embedding resampled
        (timm's ``resample_abs_pos_embed``) when it was trained at another image size."""
        kept, skipped = super().classifier_state(state)
        saved, ours = kept.get("trunk.pos_embed"), getattr(self.trunk, "pos_embed", None)
        if saved is not None and ours is not None and saved.shape != ours.shape:
            from timm.layers import resample_abs_pos_embed

            prefix = 0 if getattr(self.trunk, "no_embed_class", False) else int(self.trunk.num_prefix_tokens)
            kept["trunk.pos_embed"] = resample_abs_pos_embed(
                saved, list(self.trunk.patch_embed.grid_size), num_prefix_tokens=prefix)
        return kept, skipped


def _ceil_div(length: int, stride: int) -> int:
    return -(-length // stride)

