"""Whether DDP must look for unused parameters in every step (``find_unused_parameters``).

DDP's search walks the autograd graph once per step, and when it finds nothing it prints a warning
on every rank. It is needed only when a step's losses can leave a parameter without a gradient: a
head whose task is absent from a batch (MuST sec. 3.4: an image may lack a task's label), or a
part of the trunk no head reads (the FPN of a classification-only model). The second kind shows
in one batch: :func:`reaches_every_parameter` runs the losses of the run's first batch on a copy
of the model and asks autograd which parameters they reach. The first kind depends on the data,
so a caller whose batches may lack a task says so (``find_unused_parameters=True``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from must import distributed
from must.data.sample import Batch
from must.train import checkpoint as checkpoints


def reaches_every_parameter(model: nn.Module, batches: Callable[[], Iterator[Batch]],
                            losses: Callable[[nn.Module, Batch], Mapping[str, Tensor]],
                            device: torch.device) -> bool:
    """True when ``losses`` of the first batch of ``batches()`` reach every trainable parameter
    of ``model``, on every rank. Leaves the model, its norm statistics and every random generator
    as they were (a resumed run stays the exact continuation of an uninterrupted one)."""
    state = checkpoints.rng_state()
    try:
        stream = batches()
        batch = next(iter(stream)).to(device)
        if hasattr(stream, "close"):
            stream.close()  # stops DataLoader workers
        probe = copy.deepcopy(model).train()  # a train-mode forward updates norm statistics
        parameters = [p for p in probe.parameters() if p.requires_grad]
        values = list(losses(probe, batch).values())
        gradients = torch.autograd.grad(sum(values), parameters, allow_unused=True) if values else [None]
        reached = float(all(gradient is not None for gradient in gradients))
    finally:
        checkpoints.set_rng_state(state)
    return distributed.all_reduce_mean(torch.tensor([reached], device=device)).item() == 1.0
