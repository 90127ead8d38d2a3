"""Optimizer, learning-rate schedule and weight EMA of the training engine.

SGD with momentum or AdamW; weight decay on weights only (norm parameters and biases are exempt,
as in the ResNet / Goyal et al. 2017 recipes); a linear warmup followed by a cosine decay to zero
(MuST supp.: "all models are trained with cosine learning rate").
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from must.train.config import TrainConfig


def parameter_groups(model: nn.Module, weight_decay: float,
                     extra: Iterable[nn.Parameter] = ()) -> list[dict]:
    """Two groups: weights (``ndim > 1``) with decay; norm / bias parameters and ``extra`` (e.g.
    learned loss weights) without."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else no_decay).append(parameter)
    no_decay.extend(p for p in extra if p.requires_grad)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def build_optimizer(model: nn.Module, config: TrainConfig, extra: Iterable[nn.Parameter] = ()) -> Optimizer:
    groups = parameter_groups(model, config.weight_decay, extra)
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


def build_ema(model: nn.Module, decay: float | None) -> AveragedModel | None:
    """An exponential moving average of the weights and buffers (BN statistics included):
    ``ema <- decay * ema + (1 - decay) * weights`` after each optimizer step; None when off."""
    if decay is None:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
