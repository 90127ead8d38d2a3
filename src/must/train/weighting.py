"""Multi-task loss weighting strategies (MuST sec. 3.3 and the usual alternatives).

Each strategy combines the per-task losses of a step *and* runs the backward pass itself, because
gradient methods (PCGrad) need more than one backward. Interface::

    weighting.backward(losses, shared_parameters, scale) -> total   # total is for logging
    weighting.weights() -> {task: weight}                            # for logging

A strategy is an ``nn.Module``: learnable weights (uncertainty) are its parameters, which the
engine gives to the optimizer, and everything it needs to resume is in its ``state_dict``.
Strategies are picked by name from :data:`METHODS`, one explicit dict: the static rules and
uncertainty here, the torchjd gradient aggregators in :mod:`must.train.gradient_weighting`, the
loss-based DWA, RLW, FAMO and GradNorm in :mod:`must.train.loss_weighting`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from must.errors import ConfigError
from must.tasks.base import require_known
from must.train.config import WeightingConfig
from must.train.gradient_weighting import (AGGREGATORS, backward_replacing_shared, build_aggregator_weighting,
                                          flat_gradient)
from must.train.loss_weighting import DWAWeighting, FAMOWeighting, GradNormWeighting, RLWWeighting
from must.train.weighting_base import Weighting, all_reduce_gradients

__all__ = ["METHODS", "PCGradWeighting", "StaticWeighting", "UncertaintyWeighting", "Weighting",
           "build_weighting", "must_weights", "project_conflicting"]


class StaticWeighting(Weighting):
    """L = sum_i w_i L_i with fixed weights (MuST sec. 3.3; ``equal``: every w_i = 1)."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        super().__init__(list(weights))
        self.fixed = dict(weights)

    def backward(self, losses: Mapping[str, Tensor], shared_parameters: Sequence[nn.Parameter],
                 scale: float = 1.0) -> Tensor:
        self._check(losses)
        total = sum(self.fixed[name] * loss for name, loss in losses.items())
        (total * scale).backward()
        return total.detach()

    def weights(self) -> dict[str, float]:
        return dict(self.fixed)


class UncertaintyWeighting(Weighting):
    """Kendall, Gal & Cipolla 2018 (CVPR), eq. 7 and 10: each task has a learned noise sigma_i,
    a regression task contributes 1/(2 sigma_i^2) L_i + log sigma_i (Gaussian likelihood), a
    classification task 1/sigma_i^2 L_i + log sigma_i (scaled softmax). As the paper advises
    (sec. 3.2), the parameter is the log-variance ``s_i = log sigma_i^2``, so the terms read
    0.5 exp(-s_i) L_i + 0.5 s_i (regression) and exp(-s_i) L_i + 0.5 s_i (classification). The
    ``s_i`` start at 0 and are trained with the model (no weight decay).

    ``regression_tasks`` are the tasks of the first kind (depth, surface normals); every other
    task is classification-like: cross-entropy losses, detection (whose losses are mostly
    classification) and the self-supervised pretext losses."""

    def __init__(self, task_names: Sequence[str], regression_tasks: Iterable[str] = ()) -> None:
        super().__init__(task_names)
        self.log_variances = nn.ParameterDict({name: nn.Parameter(torch.zeros(())) for name in task_names})
        self.regression = frozenset(regression_tasks)

    def _factor(self, name: str) -> float:
        """1/2 for regression (the Gaussian's 1/(2 sigma^2)), 1 for classification."""
        return 0.5 if name in self.regression else 1.0

    def backward(self, losses: Mapping[str, Tensor], shared_parameters: Sequence[nn.Parameter],
                 scale: float = 1.0) -> Tensor:
        self._check(losses)
        total = sum(self._factor(name) * torch.exp(-self.log_variances[name]) * loss
                    + 0.5 * self.log_variances[name] for name, loss in losses.items())
        (total * scale).backward()
        return total.detach()

    def weights(self) -> dict[str, float]:
        """The factor each task's loss is multiplied by: 1/(2 sigma^2) or 1/sigma^2."""
        return {name: self._factor(name) * float(torch.exp(-value.detach()))
                for name, value in self.log_variances.items()}


def project_conflicting(gradients: Sequence[Tensor], generator: torch.Generator) -> Tensor:
    """PCGrad (Yu et al. 2020, Algorithm 1): for each task i, in a random order of the others,
    if g_i^PC . g_j < 0 then g_i^PC <- g_i^PC - (g_i^PC . g_j / |g_j|^2) g_j; returns sum_i g_i^PC.
    ``gradients`` are flat vectors of the shared parameters, one per task."""
    projected = []
    for i, gradient in enumerate(gradients):
        result = gradient.clone()
        for j in torch.randperm(len(gradients), generator=generator).tolist():
            if j == i:
                continue
            other = gradients[j]
            # clamp instead of an if: only conflicting (negative) dot products project, no host sync
            dot = torch.dot(result, other).clamp(max=0.0)
            result = result - dot / other.square().sum().clamp_min(torch.finfo(other.dtype).tiny) * other
        projected.append(result)
    return torch.stack(projected).sum(dim=0)


class PCGradWeighting(Weighting):
    """Projecting conflicting gradients (Yu et al. 2020) on the shared parameters; task-specific
    parameters (heads) get the plain gradient of sum_i w_i L_i. The task order is random, drawn
    from the strategy's own generator (saved in its state dict so resumption is exact).

    Every process takes the same path whatever its batch holds: one gradient per known task, in
    the order of ``task_names``, zero for a task absent here (a zero gradient neither projects nor
    is projected), then one ordinary backward. A loss whose backward is a collective (SimCLR's
    gather, present on every rank) thus runs the same collectives in the same order everywhere,
    and every rank's generator draws the same permutations, so they stay in lockstep.

    Each rank projects its own task gradients and the results are averaged, so under DDP this is
    not the projection one process would compute on the global batch (the projection is not
    linear); the torchjd methods (:mod:`must.train.gradient_weighting`) average the Jacobian
    first and are."""

    def __init__(self, weights: Mapping[str, float], seed: int = 0) -> None:
        super().__init__(list(weights))
        self.fixed = dict(weights)
        self.generator = torch.Generator().manual_seed(seed)

    def backward(self, losses: Mapping[str, Tensor], shared_parameters: Sequence[nn.Parameter],
                 scale: float = 1.0) -> Tensor:
        self._check(losses)
        weighted = {name: self.fixed[name] * loss for name, loss in losses.items()}
        total = sum(weighted.values())
        shared = [parameter for parameter in shared_parameters if parameter.requires_grad]
        if not shared:
            (total * scale).backward()
            return total.detach()
        flat = [flat_gradient(weighted.get(name), shared) for name in self.task_names]
        combined = project_conflicting(flat, self.generator) * scale
        backward_replacing_shared(total * scale, shared, combined)
        return total.detach()

    def synchronize_gradients(self, shared_parameters: Sequence[nn.Parameter]) -> None:
        """The projected shared gradients were computed per process: average them too."""
        all_reduce_gradients(p for p in shared_parameters if p.requires_grad)

    def weights(self) -> dict[str, float]:
        return dict(self.fixed)

    def get_extra_state(self) -> dict[str, Tensor]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["generator"])


def must_weights(config: WeightingConfig, task_names: Sequence[str], student_batch_size: int,
                 student_lr: float) -> dict[str, float]:
    """MuST sec. 3.3: w_i = (b_s * lr_it) / (b_it * lr_s), following the linear scaling rule of
    batch size and learning rate; depth tasks take ``depth_weight`` instead ("except for depth");
    ``config.weights`` overrides any task."""
    weights = {}
    for name in task_names:
        if name in config.weights:
            weights[name] = config.weights[name]
        elif name in config.depth_tasks:
            weights[name] = config.depth_weight
        elif name in config.teachers:
            teacher = config.teachers[name]
            weights[name] = (student_batch_size * teacher.lr) / (teacher.batch_size * student_lr)
        else:
            raise ConfigError(f"weighting 'must' needs the recipe of the teacher of task '{name}': set "
                              f"weighting.teachers.{name}.batch_size and .lr, or weighting.weights.{name}")
    return weights


def _equal(config: WeightingConfig, task_names: Sequence[str]) -> dict[str, float]:
    return {name: config.weights.get(name, 1.0) for name in task_names}


Builder = Callable[[WeightingConfig, Sequence[str], int, float, int], Weighting]

METHODS: dict[str, Builder] = {
    "must": lambda config, names, batch, lr, seed: StaticWeighting(must_weights(config, names, batch, lr)),
    "equal": lambda config, names, batch, lr, seed: StaticWeighting(_equal(config, names)),
    "uncertainty": lambda config, names, batch, lr, seed: UncertaintyWeighting(names, config.regression_tasks),
    "pcgrad": lambda config, names, batch, lr, seed: PCGradWeighting(_equal(config, names), seed),
    **{name: (lambda method: lambda config, names, batch, lr, seed: build_aggregator_weighting(
        method, names, config.cagrad_c, seed))(name) for name in AGGREGATORS},
    "dwa": lambda config, names, batch, lr, seed: DWAWeighting(names, config.dwa_temperature, config.dwa_window),
    "gradnorm": lambda config, names, batch, lr, seed: GradNormWeighting(
        names, config.gradnorm_alpha, config.gradnorm_lr, seed),
    "rlw": lambda config, names, batch, lr, seed: RLWWeighting(names, seed),
    "famo": lambda config, names, batch, lr, seed: FAMOWeighting(names, config.famo_lr, config.famo_decay),
}


def build_weighting(config: WeightingConfig, task_names: Sequence[str], student_batch_size: int,
                    student_lr: float, seed: int = 0) -> Weighting:
    """The strategy named by ``config.method`` for ``task_names``; ``student_batch_size`` and
    ``student_lr`` are b_s and lr_s of the MuST rule."""
    builder = require_known(config.method, METHODS, "train.weighting.method")
    return builder(config, list(task_names), student_batch_size, student_lr, seed)
