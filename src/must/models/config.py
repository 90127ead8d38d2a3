"""The model's config: backbone, width, FPN channels, norm, model noise, initial weights.

A teacher and the student share this schema (MuST sec. 3.1: "the same architecture family");
only their task lists differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from must.errors import ConfigError
from must.models.backbone import check_backbone_name

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet18"
    """A torchvision ResNet name (``resnet18`` ... ``resnet152``) or ``timm:<name>``."""
    width: float = 1.0
    """Channel multiplier of a torchvision ResNet (0.25 -> stages of 16..128 channels for ResNet-18)."""
    fpn_channels: int = 64
    norm: Literal["batch", "group", "frozen_batch"] = "batch"
    """Backbone normalization; the FPN has none (as in torchvision's detection models)."""
    sync_bn: bool = False
    """Under DDP on GPUs, BatchNorm layers use the statistics of the global batch (SyncBatchNorm)
    instead of each process's share: the paper's batches are split over many accelerators, few
    images each (global BN, as SimCLR, Chen et al. 2020, sec. 2). torch implements it for GPUs
    only: CPU processes keep per-process statistics (the engine says so once)."""
    drop_path_rate: float = 0.0
    """Stochastic depth of the last residual block (Noisy Student's model noise); earlier blocks
    drop linearly less."""
    init: str | None = None
    """A local weight file: one of our checkpoints, or a torchvision / timm ResNet state dict
    (``.pt`` / ``.pth`` / ``.safetensors``). Loaded into backbone (+ FPN for ours)."""
    init_heads: bool = False
    """With ``init`` one of our checkpoints: also load heads whose name and shapes match."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        check_backbone_name(self.backbone)
        if self.width <= 0:
            raise ConfigError(f"width must be positive, got {self.width}")
        if self.fpn_channels <= 0:
            raise ConfigError(f"fpn_channels must be positive, got {self.fpn_channels}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ConfigError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        if any(value <= 0 for value in self.std):
            raise ConfigError(f"std must be positive, got {self.std}")


def demo_model() -> ModelConfig:
    """A narrow ResNet-18 FPN that trains in minutes on 2 CPU cores (widths 16..128)."""
    return ModelConfig(backbone="resnet18", width=0.25, fpn_channels=32)
