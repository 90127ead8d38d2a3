"""RoIAlign for the Fast R-CNN head: torchvision's, with a faster form for small feature maps.

torchvision's CPU ``roi_align`` backward is a serial loop, a large part of a detection training
step on small images. RoIAlign with a
fixed sampling ratio is separable: each output bin averages bilinear samples, and a bilinear
sample is a row weight times a column weight. So for one RoI, ``out = Wy @ F @ Wx^T`` with
``Wy`` (bins x H) and ``Wx`` (bins x W) holding the averaged interpolation weights, two matrix
products whose backward is two more. That costs ``H * W / (bins * 16)`` times the direct kernel's
multiply-adds, a win on maps up to ``SMALL_MAP`` pixels and a loss beyond, where torchvision's
kernel runs. The weights follow torchvision's
rules exactly (``aligned=False``; samples beyond ``[-1, size]`` count zero; clamping at the
border), tested against ``torchvision.ops.roi_align`` values and gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as torchvision_roi_align
from torchvision.ops.poolers import _setup_scales

SMALL_MAP = 32 * 32
"""Largest feature map (H * W) pooled by matrix products; larger ones go to torchvision."""


def roi_align(features: Tensor, rois: Tensor, output_size: tuple[int, int], spatial_scale: float,
              sampling_ratio: int) -> Tensor:
    """``torchvision.ops.roi_align(..., aligned=False)``: ``rois`` is ``(R, 5)`` of
    ``(image index, x1, y1, x2, y2)``; returns ``(R, C, *output_size)``."""
    height, width = features.shape[-2:]
    if height * width > SMALL_MAP or sampling_ratio <= 0:
        return torchvision_roi_align(features, rois, output_size, spatial_scale, sampling_ratio,
                                     aligned=False)
    # torchvision pools in fp32 under autocast and returns the input's dtype: so do we
    with torch.autocast(features.device.type, enabled=False):
        pooled = _separable_roi_align(features.float(), rois.float(), output_size, spatial_scale,
                                      sampling_ratio)
    return pooled.to(features.dtype)


def _separable_roi_align(features: Tensor, rois: Tensor, output_size: tuple[int, int],
                         spatial_scale: float, sampling_ratio: int) -> Tensor:
    batch, channels, height, width = features.shape
    out_h, out_w = output_size
    if len(rois) == 0:
        return features.new_zeros(0, channels, out_h, out_w)
    image = rois[:, 0].long()
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale for i in range(1, 5))
    row_weights = _interpolation_weights(y1, y2, height, out_h, sampling_ratio)  # R, out_h, H
    column_weights = _interpolation_weights(x1, x2, width, out_w, sampling_ratio)  # R, out_w, W
    # RoIs of one image share its map: pad each image's RoIs to the largest count, batch the products
    counts = torch.bincount(image, minlength=batch)
    slot = torch.arange(len(image), device=image.device) - (torch.cumsum(counts, 0) - counts)[image]
    slots = int(counts.max())
    rows = row_weights.new_zeros(batch, slots, out_h, height)
    rows[image, slot] = row_weights
    columns = column_weights.new_zeros(batch, slots, width, out_w)
    columns[image, slot] = column_weights.transpose(1, 2)
    by_row = features.permute(0, 2, 1, 3).reshape(batch, height, channels * width)
    pooled_rows = (rows.view(batch, slots * out_h, height) @ by_row).view(batch, slots, out_h * channels, width)
    pooled = (pooled_rows @ columns)[image, slot]  # R, out_h * C, out_w
    return pooled.view(-1, out_h, channels, out_w).transpose(1, 2)


def _interpolation_weights(start: Tensor, end: Tensor, size: int, bins: int, sampling_ratio: int) -> Tensor:
    """``(R, bins, size)``: the weight of each map row (or column) in each bin, i.e. the mean over
    the bin's ``sampling_ratio`` samples of their linear interpolation weights."""
    length = (end - start).clamp(min=1.0)
    offsets = (torch.arange(bins * sampling_ratio, dtype=start.dtype, device=start.device) + 0.5) / sampling_ratio
    position = start[:, None] + offsets[None] * (length / bins)[:, None]  # R, bins * ratio
    inside = ((position >= -1.0) & (position <= size)).to(start.dtype)
    position = position.clamp(min=0.0)
    low = position.floor().clamp(max=size - 1)
    position = torch.where(low >= size - 1, low, position)
    high = (low + 1).clamp(max=size - 1)
    fraction = position - low
    weights = start.new_zeros(*position.shape, size)
    weights.scatter_add_(-1, low.long()[..., None], ((1.0 - fraction) * inside)[..., None])
    weights.scatter_add_(-1, high.long()[..., None], (fraction * inside)[..., None])
    return weights.view(len(start), bins, sampling_ratio, size).mean(2)


class PyramidRoIAlign(MultiScaleRoIAlign):
    """torchvision's ``MultiScaleRoIAlign`` (same level mapping, FPN eq. 1) pooling each level with
    ``roi_align`` above."""

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor],
                image_shapes: list[tuple[int, int]]) -> Tensor:
        maps = [x[name] for name in self.featmap_names]
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(maps, image_shapes, self.canonical_scale,
                                                         self.canonical_level)
        image = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)])
        rois = torch.cat([image, torch.cat(boxes)], dim=1)
        if len(maps) == 1:
            return roi_align(maps[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        result = maps[0].new_zeros(len(rois), maps[0].shape[1], *self.output_size)
        for level, (features, scale) in enumerate(zip(maps, self.scales)):
            chosen = torch.where(levels == level)[0]
            if len(chosen):
                pooled = roi_align(features, rois[chosen], self.output_size, scale, self.sampling_ratio)
                result[chosen] = pooled.to(result.dtype)
        return result
