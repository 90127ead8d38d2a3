"""Joint geometric augmentation: one draw of scale jitter, crop and flip applied to the image and
to every dense or box target together (MuST sec. 3.4 / supp.: scale jitter [0.5, 2.0]).
Evaluation and labeling use the same geometry at scale 1, without randomness (:meth:`Geometry.fit`),
so their images keep the aspect ratio training sees; :meth:`Geometry.unwarp_boxes` and
:meth:`Geometry.unwarp_dense` (:meth:`Geometry.unwarp_dense_to_source`) map predictions back to the source
image.

The image is resized so that its longer side is ``scale * output_size``, then a random
``output_size x output_size`` window is cut from it (padding where the resized image is smaller),
then optionally flipped left-right. Each task's ``transform_target`` calls :meth:`warp_dense` or
:meth:`warp_boxes`; the geometry itself knows nothing of tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Geometry:
    source_size: tuple[int, int]
    """(height, width) of the original image."""
    resized_size: tuple[int, int]
    """(height, width) after scaling."""
    offset: tuple[int, int]
    """(top, left) of the output window in the resized image; negative = padding."""
    output_size: tuple[int, int]
    flip: bool = False

    @property
    def scale(self) -> tuple[float, float]:
        return (self.resized_size[0] / self.source_size[0], self.resized_size[1] / self.source_size[1])

    @staticmethod
    def identity(size: tuple[int, int]) -> Geometry:
        return Geometry(size, size, (0, 0), size, False)

    @staticmethod
    def resize_to(source_size: tuple[int, int], output_size: tuple[int, int]) -> Geometry:
        """Plain resize to ``output_size``: changes the aspect ratio of a non-square image."""
        return Geometry(source_size, output_size, (0, 0), output_size, False)

    @staticmethod
    def fit(source_size: tuple[int, int], output_size: tuple[int, int]) -> Geometry:
        """Evaluation and labeling: the training geometry at scale 1 without its randomness. The
        image keeps its aspect ratio, scaled so that it just fits ``output_size`` (for a square
        window: longer side -> the window's side, as :meth:`random` scales the longer side), at the
        top-left; the rest is padding. A square image fills a square window (a plain resize)."""
        factor = min(output_size[0] / source_size[0], output_size[1] / source_size[1])
        resized = (min(output_size[0], max(1, round(source_size[0] * factor))),
                   min(output_size[1], max(1, round(source_size[1] * factor))))
        return Geometry(source_size, resized, (0, 0), output_size, False)

    @staticmethod
    def random(source_size: tuple[int, int], output_size: int, generator: torch.Generator,
               scale_range: tuple[float, float] = (0.5, 2.0), flip: bool = True) -> Geometry:
        """Scale jitter: longer side -> ``U(scale_range) * output_size``; random crop; flip."""
        low, high = scale_range
        scale = low + (high - low) * float(torch.rand((), generator=generator))
        factor = scale * output_size / max(source_size)
        resized = (max(1, round(source_size[0] * factor)), max(1, round(source_size[1] * factor)))
        offsets = []
        for length in resized:
            slack = length - output_size
            if slack >= 0:
                offsets.append(int(torch.randint(0, slack + 1, (), generator=generator)))
            else:  # smaller than the window: place it at a random spot inside the padding
                offsets.append(-int(torch.randint(0, -slack + 1, (), generator=generator)))
        do_flip = flip and bool(torch.rand((), generator=generator) < 0.5)
        return Geometry(source_size, resized, (offsets[0], offsets[1]), (output_size, output_size), do_flip)

    def warp_dense(self, tensor: Tensor, mode: str = "nearest", fill: float = 0.0) -> Tensor:
        """Warps ``[H, W]`` or ``[C, H, W]`` maps. ``nearest`` keeps labels and depths exact."""
        squeeze = tensor.dim() == 2
        data = tensor[None, None] if squeeze else tensor[None]
        dtype = data.dtype
        work = data if data.is_floating_point() else data.float()
        if tuple(work.shape[-2:]) != self.resized_size:
            if mode == "nearest":
                work = F.interpolate(work, size=self.resized_size, mode="nearest-exact")
            else:
                work = F.interpolate(work, size=self.resized_size, mode=mode, align_corners=False,
                                     antialias=mode in ("bilinear", "bicubic"))
        work = self._crop_pad(work, fill)
        if self.flip:
            work = work.flip(-1)
        if not dtype.is_floating_point:
            work = work.round().clamp(torch.iinfo(dtype).min, torch.iinfo(dtype).max)
        out = work.to(dtype)
        return out[0, 0] if squeeze else out[0]

    def warp_image(self, image: Tensor) -> Tensor:
        """``uint8 [3, H, W]`` -> ``uint8 [3, h, w]`` (bilinear, antialiased; padding is black)."""
        return self.warp_dense(image, mode="bilinear", fill=0.0)

    def warp_boxes(self, boxes: Tensor, min_size: float = 1.0) -> tuple[Tensor, Tensor]:
        """Maps xyxy boxes; clips them to the window. Returns (boxes, keep) where ``keep`` marks
        boxes still at least ``min_size`` pixels wide and high."""
        if boxes.numel() == 0:
            return boxes.reshape(0, 4), torch.zeros(0, dtype=torch.bool)
        scale_y, scale_x = self.scale
        top, left = self.offset
        height, width = self.output_size
        out = boxes.clone().float()
        out[:, [0, 2]] = out[:, [0, 2]] * scale_x - left
        out[:, [1, 3]] = out[:, [1, 3]] * scale_y - top
        out[:, [0, 2]] = out[:, [0, 2]].clamp(0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clamp(0, height)
        if self.flip:
            out[:, [0, 2]] = width - out[:, [2, 0]]
        keep = ((out[:, 2] - out[:, 0]) >= min_size) & ((out[:, 3] - out[:, 1]) >= min_size)
        return out, keep

    def content(self) -> tuple[int, int, int, int]:
        """``(top, left, bottom, right)`` of the output window holding image content (the rest is
        padding)."""
        top, left = self.offset
        height, width = self.output_size
        row0, row1 = max(-top, 0), min(self.resized_size[0] - top, height)
        col0, col1 = max(-left, 0), min(self.resized_size[1] - left, width)
        if self.flip:
            col0, col1 = width - col1, width - col0
        return row0, col0, row1, col1

    def unwarp_dense(self, tensor: Tensor) -> Tensor:
        """The inverse of :meth:`warp_dense` up to resampling, for a window that holds the whole
        resized image (:meth:`fit`): ``[..., h, w]`` maps over the window (at its resolution or a
        proportional one) -> the content region, padding dropped, un-flipped, still at the map's
        resolution; the caller resizes it to ``source_size``."""
        self._check_whole_image()
        height, width = self.output_size
        rows, cols = tensor.shape[-2] / height, tensor.shape[-1] / width
        top, left, bottom, right = self.content()
        region = tensor[..., round(top * rows):round(bottom * rows), round(left * cols):round(right * cols)]
        return region.flip(-1) if self.flip else region

    def unwarp_boxes(self, boxes: Tensor) -> Tensor:
        """The inverse of :meth:`warp_boxes`: xyxy boxes in the output window -> source pixels,
        clipped to the source image (a box reaching into the padding ends at the image border)."""
        self._check_whole_image()
        out = boxes.clone().float()
        if self.flip:
            out[:, [0, 2]] = self.output_size[1] - out[:, [2, 0]]
        top, left = self.offset
        # Multiplying by source / resized (not dividing by the scale) keeps the square case's
        # values bit-identical to the plain rescale it replaces.
        factors = torch.tensor([self.source_size[1] / self.resized_size[1],
                                self.source_size[0] / self.resized_size[0]] * 2, device=out.device)
        out = (out + torch.tensor([left, top] * 2, dtype=out.dtype, device=out.device)) * factors
        out[:, [0, 2]] = out[:, [0, 2]].clamp(0, self.source_size[1])
        out[:, [1, 3]] = out[:, [1, 3]].clamp(0, self.source_size[0])
        return out

    def unwarp_dense_to_source(self, tensor: Tensor) -> Tensor:
        """``[H, W]`` or ``[C, H, W]`` over the window -> float at ``source_size``: the content
        region (:meth:`unwarp_dense`), bilinearly resized (antialiased when shrinking, so a
        large window's detail averages instead of aliasing)."""
        region = self.unwarp_dense(tensor).float()  # the region only: the padding is never converted
        if tuple(region.shape[-2:]) == self.source_size:
            return region
        batched = region[None, None] if region.dim() == 2 else region[None]
        shrinking = self.source_size[0] < region.shape[-2] or self.source_size[1] < region.shape[-1]
        resized = F.interpolate(batched, size=self.source_size, mode="bilinear", align_corners=False,
                                antialias=shrinking)
        return resized[0, 0] if region.dim() == 2 else resized[0]

    def _check_whole_image(self) -> None:
        top, left, bottom, right = self.content()
        if (bottom - top, right - left) != self.resized_size:
            raise ValueError(f"{self}: the window cuts the image, so it cannot be mapped back whole")

    def _crop_pad(self, work: Tensor, fill: float) -> Tensor:
        top, left = self.offset
        height, width = self.output_size
        out = work.new_full((*work.shape[:2], height, width), fill)
        source_top, source_left = max(top, 0), max(left, 0)
        target_top, target_left = max(-top, 0), max(-left, 0)
        rows = min(work.shape[-2] - source_top, height - target_top)
        cols = min(work.shape[-1] - source_left, width - target_left)
        if rows > 0 and cols > 0:
            out[..., target_top:target_top + rows, target_left:target_left + cols] = \
                work[..., source_top:source_top + rows, source_left:source_left + cols]
        return out
