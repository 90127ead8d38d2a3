"""Gradient aggregation through torchjd (Quinton & Rey, "Jacobian Descent for Multi-Objective
Optimization", 2024): the per-task gradients of the shared parameters form a Jacobian J (one row
per task), an aggregator turns it into the one update direction the shared parameters get; each
task head gets its own task's gradient.

Methods: UPGrad (Quinton & Rey 2024, eq. 5), MGDA (Désidéri 2012; Sener & Koltun 2018, eq. 3),
CAGrad (Liu et al. 2021, eq. 3), Nash-MTL (Navon et al. 2022, Algorithm 1), IMTL-G (Liu et al.
2021, sec. 3.2), Aligned-MTL (Senushkin et al. 2023, Algorithm 1), GradDrop (Chen et al. 2020,
Algorithm 1), DualProj (Quinton & Rey 2024, sec. 4 / Appendix).

We do not call ``torchjd.autojac.mtl_backward``: it fills ``.grad`` outside autograd's
accumulation, which DDP's reducer never sees, and it differentiates all tasks at once under
``vmap``, which a loss whose backward is a collective (SimCLR's gather) cannot run in. Instead
:class:`JacobianWeighting` takes one gradient per task with ``torch.autograd.grad``, in the same
order on every rank, then one ordinary backward (DDP reduces the heads' gradients), then writes the
aggregation into the shared parameters' ``.grad``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from importlib.util import find_spec

import torch
from torch import Tensor, nn
from torchjd.aggregation import (CAGrad, IMTLG, MGDA, Aggregator, AlignedMTL, DualProj, GradDrop, NashMTL,
                                 UPGrad)

from must import distributed
from must.config import ConfigError
from must.train.weighting_base import Weighting


def flat_gradient(loss: Tensor | None, shared: Sequence[nn.Parameter]) -> Tensor:
    """d loss / d shared as one vector; zeros for an absent task or a loss without a graph."""
    if loss is None or not loss.requires_grad:
        return torch.cat([torch.zeros_like(p).flatten() for p in shared])
    gradients = torch.autograd.grad(loss, shared, retain_graph=True, allow_unused=True)
    return torch.cat([torch.zeros_like(p).flatten() if g is None else g.flatten()
                      for p, g in zip(shared, gradients)])


def backward_replacing_shared(loss: Tensor, shared: Sequence[nn.Parameter], combined: Tensor) -> None:
    """``loss.backward()``, except that the ``shared`` parameters' part of it is ``combined`` (one
    flat vector, in their order) instead, added to what they held before (accumulation). The
    ordinary backward gives the heads their gradients and lets DDP finish its reduction."""
    previous = [None if p.grad is None else p.grad.detach().clone() for p in shared]
    loss.backward()
    for parameter, before, piece in zip(shared, previous, combined.split([p.numel() for p in shared])):
        value = piece.view_as(parameter) if before is None else before + piece.view_as(parameter)
        if parameter.grad is None:
            parameter.grad = value.clone()
        else:
            parameter.grad.copy_(value)


class JacobianWeighting(Weighting):
    """Shared parameters get ``aggregate(J)`` of the Jacobian J of the task losses; task-specific
    parameters (heads) the plain gradient of sum_i L_i (of sum_i w_i L_i for GradNorm).

    Missing tasks (MuST sec. 3.4): J has a row per task in ``task_names``; a task no process's batch
    holds this micro-step is left out of the aggregation (a zero row would pull MGDA-like
    aggregators to a zero update). Under DDP, J is averaged over the processes before aggregating,
    so every rank aggregates the same matrix and gets the same update, the one a single process
    computes from the mean of the ranks' losses (= the global batch's loss with equal shares). A
    task absent on one rank has a zero row there, so its row is halved, like its heads' gradients
    under DDP. Random aggregators draw from the strategy's own generator (same seed on every rank,
    saved in the state dict)."""

    def __init__(self, task_names: Sequence[str], seed: int = 0) -> None:
        super().__init__(task_names)
        self.generator = torch.Generator().manual_seed(seed)
        self.last_weights: dict[str, float] = {name: 1.0 for name in self.task_names}

    def aggregate(self, jacobian: Tensor, present: Sequence[str]) -> Tensor:
        """The update direction for the shared parameters from the rows of ``present`` tasks."""
        raise NotImplementedError

    def loss_weights(self) -> dict[str, float]:
        """The factor of each task's loss in the heads' backward (1: each head its own gradient)."""
        return {name: 1.0 for name in self.task_names}

    def backward(self, losses: Mapping[str, Tensor], shared_parameters: Sequence[nn.Parameter],
                 scale: float = 1.0) -> Tensor:
        self._check(losses)
        factors = self.loss_weights()  # before aggregate(), which may update them
        total = sum(factors[name] * loss for name, loss in losses.items())
        shared = [parameter for parameter in shared_parameters if parameter.requires_grad]
        if not shared:
            (total * scale).backward()
            return total.detach()
        jacobian = torch.stack([flat_gradient(losses.get(name), shared) for name in self.task_names])
        here = torch.tensor([float(name in losses) for name in self.task_names], device=jacobian.device)
        jacobian, here = distributed.all_reduce_mean(jacobian), distributed.all_reduce_mean(here)
        present = [name for name, flag in zip(self.task_names, here.tolist()) if flag > 0]
        rows = jacobian[[self.task_names.index(name) for name in present]]
        with torch.random.fork_rng(devices=[jacobian.device] if jacobian.device.type == "cuda" else []):
            torch.manual_seed(int(torch.randint(2 ** 62, (), generator=self.generator)))
            combined = self.aggregate(rows, present) * scale
        backward_replacing_shared(total * scale, shared, combined)
        return total.detach()

    def weights(self) -> dict[str, float]:
        """The last step's weight of each task's gradient (1 where the aggregator has none)."""
        return dict(self.last_weights)

    def get_extra_state(self) -> dict[str, object]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, object]) -> None:
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]


class AggregatorWeighting(JacobianWeighting):
    """A torchjd aggregator over the present tasks' rows. Stateful aggregators (Nash-MTL) keep
    one instance per set of present tasks, built on first use, their state saved with ours."""

    def __init__(self, task_names: Sequence[str], make: Callable[[int], Aggregator], seed: int = 0) -> None:
        super().__init__(task_names, seed)
        self.make = make
        self.aggregators: dict[tuple[str, ...], Aggregator] = {}

    def _aggregator(self, present: Sequence[str]) -> Aggregator:
        key = tuple(present)
        if key not in self.aggregators:
            self.aggregators[key] = self.make(len(key))
        return self.aggregators[key]

    def aggregate(self, jacobian: Tensor, present: Sequence[str]) -> Tensor:
        aggregator = self._aggregator(present)
        weighting = getattr(aggregator, "weighting", None)
        if weighting is None:  # GradDrop: not a weighted combination of the rows
            return aggregator(jacobian)
        weights = weighting(jacobian)
        self.last_weights = {name: 0.0 for name in self.task_names} | {
            name: float(value) for name, value in zip(present, weights.tolist())}
        return weights @ jacobian

    def get_extra_state(self) -> dict[str, object]:
        return {**super().get_extra_state(), "weights": dict(self.last_weights),
                "aggregators": {key: _nash_state(aggregator) for key, aggregator in self.aggregators.items()
                                if isinstance(aggregator, NashMTL)}}

    def set_extra_state(self, state: dict[str, object]) -> None:
        super().set_extra_state(state)
        self.last_weights = dict(state["weights"])  # type: ignore[arg-type]
        for key, saved in state["aggregators"].items():  # type: ignore[union-attr]
            _restore_nash(self._aggregator(key), saved)


def _nash_state(aggregator: NashMTL) -> dict[str, object]:
    """What Nash-MTL's next step depends on: its step count and previous solution alpha."""
    weighting = aggregator.weighting
    return {"step": float(weighting.step), "alpha": torch.as_tensor(weighting.prvs_alpha).clone()}


def _restore_nash(aggregator: Aggregator, saved: Mapping[str, object]) -> None:
    weighting = aggregator.weighting
    weighting.prvs_alpha = saved["alpha"].numpy()  # type: ignore[union-attr]
    weighting.step = saved["step"]
    if weighting.step > 0:  # torchjd builds its problem at step 0 only, from prvs_alpha
        weighting._init_optim_problem()


OPTIONAL = {"upgrad": ("quadprog-projector", ["qpsolvers", "quadprog"]),
            "dualproj": ("quadprog-projector", ["qpsolvers", "quadprog"]),
            "cagrad": ("cagrad", ["cvxpy", "clarabel"]),
            "nash_mtl": ("nash-mtl", ["cvxpy", "ecos"])}
"""Methods whose torchjd solver needs an optional dependency: (torchjd extra, modules)."""

AGGREGATORS: dict[str, Callable[[float], Callable[[int], Aggregator]]] = {
    "upgrad": lambda c: lambda tasks: UPGrad(),
    "mgda": lambda c: lambda tasks: MGDA(),
    "cagrad": lambda c: lambda tasks: CAGrad(c=c),
    "nash_mtl": lambda c: lambda tasks: NashMTL(n_tasks=tasks),
    "imtl_g": lambda c: lambda tasks: IMTLG(),
    "aligned_mtl": lambda c: lambda tasks: AlignedMTL(),
    "graddrop": lambda c: lambda tasks: GradDrop(),
    "dualproj": lambda c: lambda tasks: DualProj(),
}
"""torchjd aggregators by method name; ``c`` is CAGrad's conflict radius (its eq. 3)."""


def missing_solvers(method: str) -> list[str]:
    """The modules of ``method``'s optional torchjd solver that are not installed (none needed: [])."""
    return [module for module in OPTIONAL.get(method, ("", []))[1] if find_spec(module) is None]


def build_aggregator_weighting(method: str, task_names: Sequence[str], cagrad_c: float = 0.4,
                               seed: int = 0) -> AggregatorWeighting:
    """The torchjd strategy ``method``; a missing optional solver is a :class:`ConfigError`."""
    missing = missing_solvers(method)
    if missing:
        raise ConfigError(f"train.weighting.method={method}: torchjd's solver needs {', '.join(missing)}; "
                          f"install them with pip install 'torchjd[{OPTIONAL[method][0]}]'")
    return AggregatorWeighting(task_names, AGGREGATORS[method](cagrad_c), seed)
