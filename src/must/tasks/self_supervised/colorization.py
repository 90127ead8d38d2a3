"""Colorization (Zhang, Isola & Efros 2016, "Colorful Image Colorization"; Larsson et al. 2016),
Also the Lab conversion used by Doersch & Zisserman's harmonization (D4).

* views:  the image in CIE Lab; input = the lightness ``L`` replicated to 3 channels (encoded as
          the neutral grey of that lightness, see :func:`lightness_image`), target = the ``ab``
          channels averaged over 4x4 blocks and quantized to the nearest in-gamut bin of a
          10-unit ``ab`` grid (Zhang et al. sec. 2.1 count 313 bins; here the 265 cells that some
          sRGB colour reaches, computed once from a dense sample of the RGB cube).
* head:   3 hidden 3x3 convs + GroupNorm + ReLU and a 1x1 conv on fused P2 (the MuST pixel head,
          :class:`~must.models.heads.PixelHead`), predicting one logit per bin at P2's stride 4,
          the resolution at which Zhang et al. predict colour.
* loss:   per-pixel cross-entropy over the bins.

Why classification, not L1/L2 regression on ``ab``: colour is multimodal (a shirt can be red or
blue); a regression loss is minimized by the mean of the modes, so it learns to predict greyish,
desaturated colour and its gradient vanishes once it does (Zhang et al. sec. 2.1, Fig. 2;
Larsson et al. sec. 3). A distribution over bins keeps every mode. (Zhang et al.'s class
rebalancing towards rare colours is left out: it matters for pictures, not for representations.)
A prediction is decoded with the annealed mean (sec. 2.3, T = 0.38).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.models.features import Features, FeatureSpec
from must.models.heads import PixelHead
from must.tasks.self_supervised.base import (
    FeaturesFn,
    PretextClassificationTask,
    present_views,
    square_view,
    to_unit,
)

# sRGB (D65) -> CIE XYZ, and the D65 2-degree white point: the constants of skimage.color.
_RGB_TO_XYZ = torch.tensor([[0.412453, 0.357580, 0.180423],
                            [0.212671, 0.715160, 0.072169],
                            [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
_EPSILON = 0.008856  # (6/29)^3: below it CIE's f(t) is linear
_KAPPA = 7.787  # slope of that linear part, 1 / (3 (6/29)^2)
AB_RANGE = 110.0
"""``a`` and ``b`` of sRGB colours lie within [-110, 110] (Zhang et al. Fig. 3)."""


def srgb_to_linear(rgb: Tensor) -> Tensor:
    """sRGB companding undone (IEC 61966-2-1)."""
    return torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)


def linear_to_srgb(linear: Tensor) -> Tensor:
    linear = linear.clamp_min(0)
    return torch.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, 12.92 * linear)


def rgb_to_lab(rgb: Tensor) -> Tensor:
    """``[..., 3, H, W]`` sRGB in ``[0, 1]`` -> CIE Lab (``L`` in [0, 100]), as skimage's rgb2lab."""
    linear = srgb_to_linear(rgb.double())
    matrix, white = _RGB_TO_XYZ.to(rgb.device), _WHITE.to(rgb.device)
    xyz = torch.einsum("ij,...jhw->...ihw", matrix, linear) / white[:, None, None]
    f = torch.where(xyz > _EPSILON, xyz.clamp_min(0) ** (1 / 3), _KAPPA * xyz + 16 / 116)
    fx, fy, fz = f.unbind(-3)
    lab = torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-3)
    return lab.to(rgb.dtype if rgb.is_floating_point() else torch.float32)


def lab_to_rgb(lab: Tensor) -> Tensor:
    """CIE Lab ``[..., 3, H, W]`` -> sRGB in ``[0, 1]`` (clipped), as skimage's lab2rgb."""
    lightness, a, b = lab.double().unbind(-3)
    fy = (lightness + 16) / 116
    f = torch.stack([a / 500 + fy, fy, (fy - b / 200).clamp_min(0)], dim=-3)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16 / 116) / _KAPPA)
    xyz = xyz * _WHITE.to(lab.device)[:, None, None]
    linear = torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(_RGB_TO_XYZ).to(lab.device), xyz)
    return linear_to_srgb(linear).clamp(0, 1).to(lab.dtype)


def lightness_image(image: Tensor) -> Tensor:
    """RGB ``[..., 3, H, W]`` (``uint8``, or float in [0, 1]) -> the same type and shape holding only
    the image's lightness ``L``, replicated to three channels: the colorization input, and Doersch &
    Zisserman's harmonized input for every task (sec. 4.3).

    ``L`` is encoded as the neutral sRGB grey of that lightness (the companded luminance ``Y``, of
    which ``L = 116 f(Y) - 16`` is a function): a monotone encoding of ``L`` that keeps the trunk's
    RGB normalization meaningful and makes the function idempotent (a lightness image maps to
    itself), so a model may harmonize every input, colorization's included.
    """
    unit = image.double() / 255.0 if image.dtype == torch.uint8 else image.double()
    luminance = torch.einsum("j,...jhw->...hw", _RGB_TO_XYZ[1].to(image.device), srgb_to_linear(unit))
    gray = linear_to_srgb(luminance).unsqueeze(-3).expand(*unit.shape)
    if image.dtype == torch.uint8:
        return (gray * 255).round().clamp(0, 255).to(torch.uint8).contiguous()
    return gray.to(image.dtype).contiguous()


@lru_cache(maxsize=4)
def ab_bins(bin_size: float = 10.0, samples_per_channel: int = 64) -> Tensor:
    """``float32 [Q, 2]`` centres of the ``bin_size`` ``ab`` grid cells that some sRGB colour falls
    in (a dense sample of the RGB cube, converted to Lab)."""
    levels = torch.linspace(0, 1, samples_per_channel)
    cube = torch.stack(torch.meshgrid(levels, levels, levels, indexing="ij")).reshape(3, -1, 1)
    ab = rgb_to_lab(cube.double())[1:].reshape(2, -1).T
    cells = torch.floor((ab + AB_RANGE) / bin_size).long()
    occupied = torch.unique(cells, dim=0)
    return (occupied.double() * bin_size - AB_RANGE + bin_size / 2).float()


def quantize_ab(ab: Tensor, bins: Tensor) -> Tensor:
    """``[2, H, W]`` ``ab`` -> ``int64 [H, W]`` index of the nearest bin centre."""
    flat = ab.reshape(2, -1).T.float()
    return torch.cdist(flat, bins).argmin(dim=1).reshape(ab.shape[-2:])


class ColorizationHead(PixelHead):
    """The MuST pixel head without the final upsampling: bin logits at P2's resolution."""

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        return self.predictor(self.hidden(features.fused_p2))


class ColorizationTask(PretextClassificationTask):
    name = "colorization"

    def __init__(self, view_size: int = 64, bin_size: float = 10.0, target_stride: int = 4,
                 hidden_dim: int = 128, annealing_temperature: float = 0.38) -> None:
        if view_size % target_stride:
            raise ConfigError(f"view_size {view_size} must be a multiple of target_stride {target_stride}")
        self.view_size = view_size
        self.bin_size = bin_size
        self.target_stride = target_stride
        self.hidden_dim = hidden_dim
        self.annealing_temperature = annealing_temperature
        self.bins = ab_bins(bin_size)
        self.num_outputs = len(self.bins)

    def build_head(self, spec: FeatureSpec) -> ColorizationHead:
        return ColorizationHead(spec.fpn_channels, self.num_outputs, self.hidden_dim)

    def make_views(self, image: Tensor, generator: torch.Generator,
                   index: int | None = None) -> dict[str, Tensor]:
        """``{"lightness": uint8 [3, s, s], "bins": int64 [s / 4, s / 4]}``."""
        square = square_view(image, self.view_size, generator)
        ab = F.avg_pool2d(rgb_to_lab(square.float() / 255.0)[None, 1:], self.target_stride)[0]
        return {"lightness": lightness_image(square), "bins": quantize_ab(ab, self.bins)}

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        views = present_views(target)
        if views is None:
            return None
        logits = head(features_fn(to_unit(views["lightness"])))
        labels = views["bins"]
        if logits.shape[-2:] != labels.shape[-2:]:  # trunk strides that do not divide the view
            logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        # One row per pixel: cross-entropy, accuracy and prediction treat pixels as samples.
        return {"logits": logits.permute(0, 2, 3, 1).reshape(-1, self.num_outputs),
                "labels": labels.reshape(-1), "shape": torch.tensor(labels.shape)}

    def predict(self, output: dict[str, Tensor] | None) -> list[Tensor]:
        """``float32 [2, h, w]`` ``ab`` per image: the annealed mean of the bin distribution."""
        if output is None:
            return []
        count, height, width = (int(n) for n in output["shape"])
        probabilities = F.softmax(output["logits"].detach().float() / self.annealing_temperature, dim=-1)
        ab = probabilities @ self.bins.to(probabilities.device)
        return list(ab.reshape(count, height, width, 2).permute(0, 3, 1, 2).unbind(0))

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        """The image's own lightness with the predicted colour."""
        rgb = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
        lab = rgb_to_lab(rgb)
        ab = F.interpolate(prediction[None].float().cpu(), size=lab.shape[-2:], mode="bilinear",
                           align_corners=False)[0]
        colored = lab_to_rgb(torch.cat([lab[:1], ab]))
        return (colored.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "self_supervised", "bins": self.num_outputs,
                "bin_size": self.bin_size}
