"""Gathering rows from every DDP rank for losses whose negatives span the global batch (SimCLR's
NT-Xent, PIRL's memory-bank update), when ranks may hold different numbers of rows, zero
included: a mixed batch may give a rank few or no images with a given self-supervised target.
"""

from __future__ import annotations

import torch
from torch import Tensor

from must import distributed


def gather_rows(tensor: Tensor) -> tuple[Tensor, int]:
    """``(rows of every rank concatenated in rank order, index of this rank's first row)``.

    The gradient is exact (:func:`must.distributed.all_gather_with_grad`): it sums over ranks.
    Every rank must call it, also with zero rows: it is a collective, and so is its backward.
    One process: ``(tensor, 0)``.
    """
    if not distributed.is_initialized():
        return tensor, 0
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [int(n) for n in distributed.all_gather_with_grad(count)]
    largest = max(counts)
    if largest == 0:
        return tensor, 0
    # all_gather needs one shape on every rank: pad to the largest count, then drop the padding.
    padding = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
    gathered = distributed.all_gather_with_grad(torch.cat([tensor, padding]))
    keep = torch.cat([torch.arange(largest, device=tensor.device) < n for n in counts])
    return gathered[keep], sum(counts[: distributed.rank()])
