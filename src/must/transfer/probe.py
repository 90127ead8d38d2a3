"""Frozen-trunk evaluation: the linear probe (Doersch & Zisserman 2017 sec. 4 evaluate
their representations "by training only a linear classifier on top of the frozen network" as well
as by fine-tuning).

Freezing means three things, all needed for the trunk to stay bit for bit what the checkpoint had:
no gradients (``requires_grad=False``, so the optimizer gets only the heads), BatchNorm in eval mode
(running statistics used and never updated), and no model noise (stochastic depth and dropout are
off in eval mode). The engine calls ``model.train()`` at the start of every run and evaluation
switches modes back and forth, so the trunk's modules are pinned to eval mode instead of being
switched once.
"""

from __future__ import annotations

import types

from torch import nn

from must.models import MultiTaskModel

TRUNK = ("backbone", "fpn")


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    """``module.train(mode)`` for a frozen module: always eval mode, for it and its children."""
    return nn.Module.train(module, False)


def freeze_trunk(model: MultiTaskModel) -> list[nn.Parameter]:
    """Freezes backbone + FPN in place (see the module docstring); returns the parameters left
    trainable, the heads'."""
    for name in TRUNK:
        part: nn.Module = getattr(model, name)
        for parameter in part.parameters():
            parameter.requires_grad_(False)
        for module in part.modules():
            # nn.Module.train calls child.train(mode) on every child, so an instance-level train
            # reaches each trunk module wherever the call starts.
            module.train = types.MethodType(_stay_in_eval, module)  # type: ignore[method-assign]
        part.eval()
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def is_frozen(module: nn.Module) -> bool:
    """True when no parameter of ``module`` trains and every submodule is in eval mode."""
    return (not any(parameter.requires_grad for parameter in module.parameters())
            and not any(sub.training for sub in module.modules()))
