"""Noise-contrastive estimation against a memory bank (Wu et al. 2018, "Unsupervised Feature
Learning via Non-Parametric Instance Discrimination", sec. 3.2; used by PIRL, Misra & van der
Maaten 2020, sec. 3.1-3.2, eq. 3-4).

The probability that candidate ``f'`` is the data sample for the query ``v``, against ``m``
negatives drawn uniformly from ``n`` bank entries (noise density ``P_n = 1 / n``)::

    P(f' | v) = exp(s(f', v) / tau) / Z
    h(f', v)  = P(f' | v) / (P(f' | v) + m / n)
    L_NCE     = -log h(f, v) - sum_{f' in negatives} log(1 - h(f', v))

``Z`` is the partition function, estimated once by Monte Carlo from the first batch
(``Z ~ n * mean exp(s / tau)``, Wu et al. sec. 3.2) and then held fixed.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def nce_loss(positive: Tensor, negatives: Tensor, num_data: int, normalizer: Tensor | float,
             temperature: float = 0.07) -> Tensor:
    """``positive``: ``[B]`` cosine similarities of each query with its own bank entry;
    ``negatives``: ``[B, m]`` similarities with ``m`` noise entries. Mean ``L_NCE`` over ``B``."""
    if positive.dim() != 1 or negatives.dim() != 2 or negatives.shape[0] != positive.shape[0]:
        raise ValueError(f"expected positive [B] and negatives [B, m], got {tuple(positive.shape)} "
                         f"and {tuple(negatives.shape)}")
    count = negatives.shape[1]
    log_noise = math.log(count / num_data)  # log(m * P_n)
    log_z = torch.log(torch.as_tensor(normalizer, dtype=torch.float32, device=positive.device))
    log_p_positive = positive.float() / temperature - log_z
    log_p_negative = negatives.float() / temperature - log_z
    noise = torch.full_like(log_p_positive, log_noise)
    # log h = log P - log(P + m P_n); log(1 - h) = log(m P_n) - log(P + m P_n): stable in log space.
    log_h_positive = log_p_positive - torch.logaddexp(log_p_positive, noise)
    log_not_h_negative = log_noise - torch.logaddexp(log_p_negative, noise[:, None])
    return -(log_h_positive + log_not_h_negative.sum(dim=1)).mean()


def estimate_normalizer(similarities: Tensor, num_data: int, temperature: float = 0.07) -> Tensor:
    """Monte Carlo estimate of ``Z = sum_i exp(s_i / tau)`` over the ``n`` bank entries from a
    sample of similarities (Wu et al. 2018, sec. 3.2)."""
    return torch.exp(similarities.detach().float() / temperature).mean() * num_data
