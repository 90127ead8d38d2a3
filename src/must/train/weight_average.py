"""The weight average of training (``train.ema_decay``): an exponential moving average of the
weights, ``ema <- decay * ema + (1 - decay) * theta`` after every optimizer step (Polyak averaging;
Mean Teacher's teacher, Tarvainen & Valpola 2017 sec. 2).

Only what training moves is averaged: the parameters the optimizer trains (``requires_grad``) and
the floating-point buffers of the modules that own them (BatchNorm's running mean and variance).
Everything else is copied from the live model as it is: frozen parameters, the momentum encoders'
target copies (BYOL, MoCo, DINO: already a moving average of the online weights, which their head
updates itself), their ``initialized`` flag, queues, centres and integer counters. Averaging a
target again would give a target no method defines (and a bool flag has no average); leaving it
out instead would leave the average a model whose target is stale, and it is a complete model: it is
evaluated, returned as the run's result and is Mean Teacher's teacher.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


class TrainedWeightAverage(AveragedModel):
    """:class:`torch.optim.swa_utils.AveragedModel` with torch's EMA update
    (:func:`~torch.optim.swa_utils.get_ema_multi_avg_fn`) restricted to the trained state (module
    docstring). The first update copies everything, as AveragedModel's does; the state dict is
    AveragedModel's (``module.*`` and ``n_averaged``)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        super().__init__(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self._split: tuple[int, list[tuple[Tensor, Tensor]], list[tuple[list[Tensor], list[Tensor]]]] | None = None

    def update_parameters(self, model: nn.Module) -> None:
        copied, groups = self.plan(model)
        if self.n_averaged == 0:  # the first update copies everything
            copied = copied + [pair for ema, live in groups for pair in zip(ema, live)]
            groups = []
        for destination, source in copied:
            destination.copy_(source)
        for ema, live in groups:
            self.multi_avg_fn(ema, live, self.n_averaged)
        self.n_averaged += 1

    def plan(self, model: nn.Module) -> tuple[list[tuple[Tensor, Tensor]], list[tuple[list[Tensor], list[Tensor]]]]:
        """The copied pairs and the averaged tensors grouped by device and dtype (the foreach kernel
        wants one of each), worked out once per model: training never replaces a parameter or
        buffer (it updates them in place) nor changes which ones train."""
        if self._split is None or self._split[0] != id(model):
            averaged, copied = split_trained_state(self.module, model)
            groups: dict[tuple, tuple[list[Tensor], list[Tensor]]] = {}
            for destination, source in averaged:
                ema, live = groups.setdefault((destination.device, destination.dtype), ([], []))
                ema.append(destination)
                live.append(source)
            self._split = (id(model), copied, list(groups.values()))
        return self._split[1], self._split[2]


def split_trained_state(average: nn.Module, model: nn.Module) -> tuple[list[tuple[Tensor, Tensor]],
                                                                        list[tuple[Tensor, Tensor]]]:
    """``(averaged, copied)``: pairs ``(tensor of average, tensor of model)``, detached, split as the
    module docstring says; ``average`` is a deep copy of ``model``. A tensor two modules share is
    listed once."""
    averaged: list[tuple[Tensor, Tensor]] = []
    copied: list[tuple[Tensor, Tensor]] = []
    seen: set[int] = set()
    # The modules' own dicts, not named_parameters / named_buffers (their generators are slower).
    for mine, theirs in zip(average.modules(), model.modules(), strict=True):
        trained = any(p is not None and p.requires_grad for p in theirs._parameters.values())
        for kind in ("_parameters", "_buffers"):
            for name, source in getattr(theirs, kind).items():
                if source is None or id(source) in seen:
                    continue
                seen.add(id(source))
                if kind == "_parameters":
                    moves = source.requires_grad
                else:  # a buffer: BN statistics of a trained layer move with it; counters, flags do not
                    moves = trained and source.is_floating_point()
                (averaged if moves else copied).append((getattr(mine, kind)[name].detach(), source.detach()))
    return averaged, copied
