"""MoCo's contrastive losses.

* v2 (He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning",
  sec. 3.1 eq. 1 and Algorithm 1; Chen et al. 2020, "Improved Baselines with Momentum Contrastive
  Learning", temperature 0.2): InfoNCE of a query against its key and a queue of keys::

      L_q = -log exp(q . k+ / tau) / (exp(q . k+ / tau) + sum_{k- in queue} exp(q . k- / tau))

  equal to lightly's ``NTXentLoss`` with a memory bank holding the queue (tested).
* v3 (Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers",
  sec. 3, Algorithm 1): the other keys of the batch are the negatives and the loss is symmetric,
  ``ctr(q1, k2) + ctr(q2, k1)`` with ``ctr(q, k) = 2 tau CE(q k^T / tau, labels = own key)``.

Queries and keys are L2-normalized here; keys carry no gradient (the momentum encoder's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def moco_loss(query: Tensor, key: Tensor, queue: Tensor, temperature: float = 0.2) -> Tensor:
    """``query``, ``key``: ``[N, D]`` (row ``i`` two views of image ``i``); ``queue``: ``[K, D]``
    earlier keys, the negatives. Mean of ``L_q`` over the ``N`` queries (MoCo eq. 1)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    query = F.normalize(query.float(), dim=1)
    key = F.normalize(key.float(), dim=1).detach()
    positive = (query * key).sum(dim=1, keepdim=True)
    negative = query @ F.normalize(queue.float(), dim=1).detach().T
    logits = torch.cat([positive, negative], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))


def moco_v3_contrast(query: Tensor, key: Tensor, temperature: float = 0.2) -> Tensor:
    """``ctr(q, k) = 2 tau CE(q k^T / tau, i)``: key ``i`` is query ``i``'s positive, the other keys
    of the batch its negatives (MoCo v3 Algorithm 1)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    query = F.normalize(query.float(), dim=1)
    key = F.normalize(key.float(), dim=1).detach()
    logits = query @ key.T / temperature
    labels = torch.arange(query.shape[0], device=query.device)
    return F.cross_entropy(logits, labels) * 2 * temperature


def moco_v3_loss(query_first: Tensor, query_second: Tensor, key_first: Tensor, key_second: Tensor,
                 temperature: float = 0.2) -> Tensor:
    """``ctr(q1, k2) + ctr(q2, k1)`` (MoCo v3 Algorithm 1)."""
    return (moco_v3_contrast(query_first, key_second, temperature)
            + moco_v3_contrast(query_second, key_first, temperature))
