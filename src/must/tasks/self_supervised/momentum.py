"""Momentum encoders: a slowly moving copy of the trunk and projection (BYOL, Grill et al. 2020,
sec. 3.1; MoCo, He et al. 2020, sec. 3.2, eq. 2; DINO, Caron et al. 2021, sec. 3.1)::

    xi <- tau xi + (1 - tau) theta          after every optimizer step

``theta`` the online (trained) weights, ``xi`` the target's. ``tau`` follows BYOL's schedule
(sec. 3.2: ``tau = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2``, lightly's ``cosine_schedule``
from ``tau_base`` to ``final_momentum``); ``final_momentum = tau_base`` keeps it constant (MoCo v2).

:class:`MomentumHead` is the task's head: the online projection (and predictor) and the target
copies of backbone and projection, all in the model's ``state_dict`` (so the engine's checkpoint
holds them and a resumed run continues bit for bit). The target is not trained by the optimizer
(``requires_grad`` off, lightly's ``deactivate_requires_grad``) and is moved by the engine's
after-step hook (:meth:`MomentumHead.after_optimizer_step`, lightly's ``update_momentum``). It
copies the online weights on the first training pass (``initialized``), i.e. after any initial
weights were loaded, on every rank (also one whose batch had no views for the task). The buffer is
what a checkpoint restores; the head reads it until it is True (a device-to-host wait on a GPU) and
then keeps a Python copy, so a training step never waits on it. The target reads pooled C5 of its
own backbone copy; the FPN is not copied (these heads never read it).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Any

import torch
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule
from torch import Tensor, nn

from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.models.features import Features
from must.tasks.self_supervised.base import pooled_c5


def check_momentum(base_momentum: float, final_momentum: float) -> None:
    """Refuses a schedule outside ``0 <= tau_base <= tau_final <= 1``."""
    if not 0.0 <= base_momentum <= final_momentum <= 1.0:
        raise ConfigError(f"momentum must satisfy 0 <= base_momentum ({base_momentum}) <= "
                          f"final_momentum ({final_momentum}) <= 1")


class MomentumHead(nn.Module):
    """``forward(features)`` = online ``projection(pooled C5)``; ``predict`` the online predictor
    (identity when there is none); ``target_embed(images)`` the momentum branch, without gradient.

    The model calls :meth:`attach_trunk` once it has its backbone (``MultiTaskModel.__init__``).
    """

    reads_pyramid = False

    def __init__(self, projection: nn.Module, prediction: nn.Module | None, base_momentum: float,
                 final_momentum: float = 1.0) -> None:
        super().__init__()
        check_momentum(base_momentum, final_momentum)
        self.base_momentum, self.final_momentum = base_momentum, final_momentum
        self.projection = projection
        self.prediction = prediction if prediction is not None else nn.Identity()
        self.target_projection = copy.deepcopy(projection)
        deactivate_requires_grad(self.target_projection)
        self.target_backbone: nn.Module | None = None
        self.trunk_owner: list[Any] = []  # [the model]: a reference, not a submodule
        # False until the first training pass copies the online weights (after initial weights).
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.started = False  # the buffer read once it is True; reset by load_state_dict

    def attach_trunk(self, model: nn.Module) -> None:
        """Keeps a reference to ``model`` (its ``backbone``, ``mean``, ``std``) and a frozen copy of
        its backbone as the target's trunk."""
        self.trunk_owner = [model]
        self.target_backbone = copy.deepcopy(model.backbone)
        deactivate_requires_grad(self.target_backbone)

    @property
    def model(self) -> nn.Module:
        if not self.trunk_owner or self.target_backbone is None:
            raise RuntimeError("MomentumHead needs attach_trunk(model) before use (MultiTaskModel does it)")
        return self.trunk_owner[0]

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        return self.projection(pooled_c5(features))

    def predict(self, projection: Tensor) -> Tensor:
        return self.prediction(projection)

    @torch.no_grad()
    def start(self) -> None:
        """Target := online, once, on the first training pass (BYOL sec. 3.2: ``xi`` starts at
        ``theta``)."""
        if not self.training or self.is_started():
            return
        self.target_backbone.load_state_dict(self.model.backbone.state_dict())
        self.target_projection.load_state_dict(self.projection.state_dict())
        self.initialized.fill_(True)
        self.started = True

    def is_started(self) -> bool:
        """Whether the target was copied from the online weights: the ``initialized`` buffer, read
        from the device only until it is seen True (every rank copies at the same, first, pass)."""
        if not self.started:
            self.started = bool(self.initialized)
        return self.started

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.started = False  # the restored buffer decides, at the next read

    @torch.no_grad()
    def target_embed(self, images: Tensor) -> Tensor:
        """``float [N, 3, h, w]`` in ``[0, 1]`` -> target projection ``[N, D]`` (normalized as the
        model normalizes its input)."""
        self.start()
        model = self.model
        stages = self.target_backbone((images - model.mean) / model.std)
        features = Features((int(images.shape[-2]), int(images.shape[-1])), stages, OrderedDict())
        return self.target_projection(pooled_c5(features))

    def momentum(self, index: int, steps: int) -> float:
        """``tau_k`` for the step of 0-based ``index`` ``k`` of ``K = steps`` (BYOL sec. 3.2's cosine
        schedule, ``tau_base`` at the first step, ``final_momentum`` at the last)."""
        return cosine_schedule(index, max(steps, 2), self.base_momentum, self.final_momentum)

    @torch.no_grad()
    def after_optimizer_step(self, step: int, steps: int) -> None:
        """``xi <- tau xi + (1 - tau) theta`` after optimizer step ``step`` (1-based) of ``steps``
        (the engine calls it after every optimizer step)."""
        if not self.is_started():  # no training pass yet (e.g. a batch without views): nothing to track
            return
        tau = self.momentum(step - 1, steps)
        update_momentum(self.model.backbone, self.target_backbone, tau)
        update_momentum(self.projection, self.target_projection, tau)
