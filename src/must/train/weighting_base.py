"""The interface every loss weighting strategy implements (MuST sec. 3.3 and the alternatives in
:mod:`must.train.weighting`, :mod:`must.train.gradient_weighting`, :mod:`must.train.loss_weighting`),
and the collectives they share under DDP."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from must import distributed


class Weighting(nn.Module):
    """Base class: ``losses`` hold only the tasks present in the batch (MuST sec. 3.4).

    ``backward(losses, shared_parameters, scale)`` backpropagates and returns the combined loss
    (for logging); ``synchronize_gradients`` is called once per optimizer step, after the
    accumulation micro-steps, so a strategy whose state advances per step advances it there."""

    def __init__(self, task_names: Sequence[str]) -> None:
        super().__init__()
        self.task_names = list(task_names)

    def backward(self, losses: Mapping[str, Tensor], shared_parameters: Sequence[nn.Parameter],
                 scale: float = 1.0) -> Tensor:
        """Backpropagates ``scale *`` the combined loss (``scale`` = 1 / accumulation steps);
        returns the unscaled combined loss, detached."""
        raise NotImplementedError

    def weights(self) -> dict[str, float]:
        raise NotImplementedError

    def synchronize_gradients(self, shared_parameters: Sequence[nn.Parameter]) -> None:
        """Averages over processes the gradients DDP does not see: the strategy's own parameters,
        which live outside the DDP-wrapped model. Called once per optimizer step."""
        all_reduce_gradients(self.parameters())

    def _check(self, losses: Mapping[str, Tensor]) -> None:
        unknown = sorted(set(losses) - set(self.task_names))
        if unknown:
            raise KeyError(f"losses for unknown task(s) {unknown}; weighting knows {self.task_names}")


def all_reduce_gradients(parameters: Iterable[nn.Parameter]) -> None:
    """Mean of each parameter's gradient over the processes (a no-op in one process)."""
    if not distributed.is_initialized():
        return
    for parameter in parameters:
        if parameter.grad is None:  # every rank must join each collective: use zeros
            parameter.grad = torch.zeros_like(parameter)
        parameter.grad.copy_(distributed.all_reduce_mean(parameter.grad))


def global_loss_values(losses: Mapping[str, Tensor], task_names: Sequence[str],
                       device: torch.device) -> tuple[Tensor, Tensor]:
    """(values, present) over ``task_names``: each task's detached loss averaged over the processes
    whose batch holds it, and whether any does. One collective, joined by every rank whatever its
    batch holds, so every rank derives the same weights. With equal shares per rank this is the loss
    one process computes on the global batch."""
    zero = torch.zeros((), device=device)
    values = torch.stack([losses[name].detach().float() if name in losses else zero for name in task_names])
    counts = torch.tensor([float(name in losses) for name in task_names], device=device)
    both = torch.cat([values, counts])
    if distributed.is_initialized():
        both = distributed.all_reduce_mean(both) * distributed.world_size()
    values, counts = both[:len(task_names)], both[len(task_names):]
    return values / counts.clamp_min(1.0), counts > 0
