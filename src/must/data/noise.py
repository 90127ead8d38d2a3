"""Input noise for Noisy Student (Xie et al. 2020): RandAugment restricted to photometric
operations.

RandAugment (Cubuk et al. 2020) applies ``num_ops`` operations drawn uniformly from a fixed list,
each at a shared ``magnitude``. Its geometric operations (rotate, shear, translate) would move
pixels away from their dense labels, so this version draws only from the operations that change
pixel values in place; geometric noise comes from the joint scale jitter / crop / flip, which
transforms every target with the image. The operations are torchvision's functional ones at
the magnitudes of torchvision's ``RandAugment`` (31 bins): each equals that op of RandAugment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from must.errors import ConfigError

MAX_MAGNITUDE = 30
"""RandAugment's magnitude scale (torchvision's ``num_magnitude_bins - 1``)."""


def _bin(magnitude: int, first: float, last: float) -> float:
    """Bin ``magnitude`` of ``first .. last`` in ``MAX_MAGNITUDE`` equal steps, computed as
    torchvision's RandAugment computes its bins (float32 ``linspace``), so a factor or threshold
    that lands on a pixel value (solarize at magnitude 16: 119) rounds the way RandAugment's does."""
    return float(torch.linspace(first, last, MAX_MAGNITUDE + 1)[magnitude])


def _strength(magnitude: int, high: float) -> float:
    return _bin(magnitude, 0.0, high)


def _signed(value: float, generator: torch.Generator) -> float:
    return value if bool(torch.rand((), generator=generator) < 0.5) else -value


Operation = Callable[[Tensor, int, torch.Generator], Tensor]

OPERATIONS: dict[str, Operation] = {
    "identity": lambda image, m, g: image,
    "brightness": lambda image, m, g: TF.adjust_brightness(image, 1.0 + _signed(_strength(m, 0.9), g)),
    "color": lambda image, m, g: TF.adjust_saturation(image, 1.0 + _signed(_strength(m, 0.9), g)),
    "contrast": lambda image, m, g: TF.adjust_contrast(image, 1.0 + _signed(_strength(m, 0.9), g)),
    "sharpness": lambda image, m, g: TF.adjust_sharpness(image, 1.0 + _signed(_strength(m, 0.9), g)),
    "posterize": lambda image, m, g: TF.posterize(image, int(8 - round(_strength(m, 4.0)))),
    "solarize": lambda image, m, g: TF.solarize(image, 255.0 * _bin(m, 1.0, 0.0)),
    "autocontrast": lambda image, m, g: TF.autocontrast(image),
    "equalize": lambda image, m, g: TF.equalize(image),
}


@dataclass(frozen=True)
class PhotometricRandAugment:
    """``num_ops`` photometric operations at ``magnitude`` (0..30) on a ``uint8 [3, H, W]`` image,
    drawn from the sample's own generator (deterministic given the augmentation seed)."""

    num_ops: int = 2
    magnitude: int = 9

    def __post_init__(self) -> None:
        if self.num_ops < 0 or not 0 <= self.magnitude <= MAX_MAGNITUDE:
            raise ConfigError(f"RandAugment needs num_ops >= 0 and magnitude in [0, {MAX_MAGNITUDE}]")

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        names = list(OPERATIONS)
        for _ in range(self.num_ops):
            name = names[int(torch.randint(len(names), (), generator=generator))]
            image = OPERATIONS[name](image, self.magnitude, generator)
        return image
