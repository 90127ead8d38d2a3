"""Batch norm that normalizes by the batch but leaves its running averages alone.

The views of self-supervised tasks (crops, rotations, tiles, grey images...) go through the same
trunk as the supervised batch (MuST sec. 3.3: one shared backbone), but their statistics are not
those of the images the model is evaluated and pseudo-labels on. While the supervised batch passes
too, the views therefore normalize by their own batch statistics, as the pretext methods train,
and leave the running mean and variance (what evaluation uses) to the supervised pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@contextlib.contextmanager
def running_statistics_frozen(*modules: nn.Module, frozen: bool = True) -> Iterator[None]:
    """Within the block, every batch norm of ``modules`` (``BatchNorm*d`` and ``SyncBatchNorm``)
    normalizes as before (batch statistics in training mode, running ones in evaluation mode) but
    updates neither its running mean and variance nor its batch count: ``track_running_stats`` is
    switched off, the case in which PyTorch's batch norm uses batch statistics without an update.
    Restored on exit, also after an exception. ``frozen=False``: nothing changes."""
    layers = [layer for module in modules for layer in module.modules()
              if isinstance(layer, _BatchNorm) and layer.track_running_stats] if frozen else []
    for layer in layers:
        layer.track_running_stats = False
    try:
        yield
    finally:
        for layer in layers:
            layer.track_running_stats = True
