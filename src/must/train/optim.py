"""Optimizer, learning-rate schedule and weight EMA of the training engine.

SGD with momentum or AdamW; weight decay on weights only (norm parameters and biases are exempt,
as in the ResNet / Goyal et al. 2017 recipes, and so is whatever a module lists in its
``no_weight_decay()``: a ViT's position embedding, the lasso's mixing weights, whose only
regularizer is their L1 penalty, Doersch & Zisserman 2017 sec. 4.2); optional layer-wise learning-rate decay over the
backbone for fine-tuning; a linear warmup followed by a cosine decay to zero (MuST supp.: "all
models are trained with cosine learning rate").
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from must.train.config import TrainConfig
from must.train.weight_average import TrainedWeightAverage


def parameter_groups(model: nn.Module, weight_decay: float, extra: Iterable[nn.Parameter] = (),
                     layer_decay: float = 1.0) -> list[dict]:
    """Weights (``ndim > 1``) with decay; norm / bias parameters, ``extra`` (e.g. learned loss
    weights) and what any module exempts (:func:`exempt_from_decay`: a ViT's position embedding
    and class token, the lasso's mixing weights) without.

    ``layer_decay < 1``: layer-wise learning-rate decay for fine-tuning (BEiT, Bao et al. 2022; the
    MAE and ViTDet fine-tuning recipes, He et al. 2022, Li et al. 2022): backbone layer ``l`` of ``L`` (0 = stem, from
    ``model.backbone.parameter_layers()``) trains at ``layer_decay ** (L - l)`` times the learning
    rate, while the FPN, the heads and ``extra`` train at the full rate. Each group carries its
    ``lr_scale``."""
    backbone = getattr(model, "backbone", None)
    exempt = exempt_from_decay(model)
    layers = _backbone_layers(backbone) if layer_decay != 1.0 else {}
    top = max(layers.values(), default=-1) + 1
    groups: dict[tuple[bool, int], dict] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            decays = parameter.ndim > 1 and name not in exempt
            group = _group(groups, decays, layers.get(name, top), top, weight_decay, layer_decay)
            group["params"].append(parameter)
    for parameter in extra:
        if parameter.requires_grad:
            _group(groups, False, top, top, weight_decay, layer_decay)["params"].append(parameter)
    # Full-rate groups first: the engine logs the learning rate of group 0.
    return [groups[key] for key in sorted(groups, key=lambda key: (-key[1], not key[0]))]


def exempt_from_decay(model: nn.Module) -> set[str]:
    """Full names of the parameters that some submodule lists in its ``no_weight_decay()`` (the
    timm convention: names relative to that module)."""
    exempt: set[str] = set()
    for prefix, module in model.named_modules():
        names = getattr(module, "no_weight_decay", None)
        if callable(names):
            exempt |= {f"{prefix}.{name}" if prefix else name for name in names()}
    return exempt


def _group(groups: dict[tuple[bool, int], dict], decays: bool, layer: int, top: int, weight_decay: float,
           layer_decay: float) -> dict:
    key = (decays, layer)
    if key not in groups:
        groups[key] = {"params": [], "weight_decay": weight_decay if decays else 0.0,
                       "lr_scale": layer_decay ** (top - layer)}
    return groups[key]


def _backbone_layers(backbone: nn.Module | None) -> dict[str, int]:
    if not hasattr(backbone, "parameter_layers"):
        raise ValueError("layer_decay needs a model with a backbone that numbers its layers "
                         "(a must model: torchvision / timm backbone)")
    return {f"backbone.{name}": layer for name, layer in backbone.parameter_layers().items()}


def build_optimizer(model: nn.Module, config: TrainConfig, extra: Iterable[nn.Parameter] = ()) -> Optimizer:
    groups = parameter_groups(model, config.weight_decay, extra, config.layer_decay)
    for group in groups:  # the schedule multiplies each group's own peak rate
        group["lr"] = config.lr * group["lr_scale"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based): linear warmup
    ``(step + 1) / warmup`` then ``0.5 (1 + cos(pi t))`` with ``t`` going from 0 to 1."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class _Schedule:
    """A picklable lambda for LambdaLR."""

    def __init__(self, warmup_steps: int, total_steps: int) -> None:
        self.warmup_steps, self.total_steps = warmup_steps, total_steps

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.warmup_steps, self.total_steps)


def build_scheduler(optimizer: Optimizer, config: TrainConfig) -> LambdaLR:
    return LambdaLR(optimizer, _Schedule(config.warmup_steps, config.steps))


def build_ema(model: nn.Module, decay: float | None) -> TrainedWeightAverage | None:
    """An exponential moving average of the trained weights and their BN statistics:
    ``ema <- decay * ema + (1 - decay) * weights`` after each optimizer step; frozen state (momentum
    targets) copied as is (:mod:`must.train.weight_average`); None when off."""
    if decay is None:
        return None
    return TrainedWeightAverage(model, decay)
