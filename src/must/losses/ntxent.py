"""NT-Xent, the normalized temperature-scaled cross-entropy of SimCLR (Chen et al. 2020, sec. 2.1,
eq. 1)::

    l(i, j) = -log exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau)

over the ``2N`` projections of ``N`` images (two views each), ``sim`` the cosine similarity, the
loss the mean of ``l`` over all ``2N`` anchors. Under DDP the candidates of every anchor are the
views of *all* ranks' images (:func:`must.losses.gather.gather_rows`, built on
:func:`must.distributed.all_gather_with_grad`), the anchors the local ones: with equal per-rank
batches the mean of the ranks' losses equals the one-process loss on the whole batch. Ranks may
hold different numbers of images, none included (their loss is zero, and they must still call
this function and backpropagate through it: the gather and its backward are collectives). The
gradient is exact: each rank's views get the gradient of every rank's loss, so DDP's averaged
gradient equals the one-process gradient on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from must.losses.gather import gather_rows


def nt_xent_loss(first: Tensor, second: Tensor, temperature: float = 0.1,
                 gather: bool = True) -> Tensor:
    """``first[i]`` and ``second[i]`` (``[N, D]``) are two views of image ``i``; every other view in
    the (gathered) batch is a negative. Returns the mean over the ``2N`` local anchors."""
    if first.shape != second.shape or first.dim() != 2:
        raise ValueError(f"views must both be [N, D]; got {tuple(first.shape)} and {tuple(second.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    first = F.normalize(first.float(), dim=1)
    second = F.normalize(second.float(), dim=1)
    local, width = first.shape
    if gather:
        # One gather for both views: one backward all-reduce, so ranks cannot pair them up wrongly.
        pairs, offset = gather_rows(torch.cat([first, second], dim=1))
        all_first, all_second = pairs[:, :width], pairs[:, width:]
    else:
        all_first, all_second, offset = first, second, 0
    if local == 0:  # zero, but through the gather: this rank joins the backward all-reduce
        return (all_first.sum() + all_second.sum()) * 0.0
    total = all_first.shape[0]
    anchors = torch.cat([first, second])  # [2n, D]: local views, first views then second views
    candidates = torch.cat([all_first, all_second])  # [2N, D]: same layout over all ranks
    logits = anchors @ candidates.T / temperature
    rows = torch.arange(local, device=first.device) + offset
    own = torch.cat([rows, rows + total])  # each anchor's own column: never its own negative
    positive = torch.cat([rows + total, rows])  # the other view of the same image
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[torch.arange(2 * local, device=first.device), own] = True
    logits = logits.masked_fill(self_mask, float("-inf"))
    return F.cross_entropy(logits, positive)


def contrastive_accuracy(first: Tensor, second: Tensor) -> Tensor:
    """Fraction of the ``2N`` views whose most similar other view is their positive (no gather:
    a per-rank diagnostic for the metric)."""
    views = F.normalize(torch.cat([first, second]).float(), dim=1)
    count = first.shape[0]
    similarity = views @ views.T
    similarity.fill_diagonal_(float("-inf"))
    positive = torch.cat([torch.arange(count) + count, torch.arange(count)]).to(views.device)
    return (similarity.argmax(dim=1) == positive).float().mean()
