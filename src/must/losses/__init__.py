"""Losses shared by several tasks, one file per loss, each tested against a naive reference.
(Distillation's losses live with their task in :mod:`must.tasks.distillation`: they build on
classification's soft-target cross-entropy.)"""

from must.losses.gather import gather_rows
from must.losses.nce import estimate_normalizer, nce_loss
from must.losses.ntxent import contrastive_accuracy, nt_xent_loss

__all__ = ["contrastive_accuracy", "estimate_normalizer", "gather_rows", "nce_loss", "nt_xent_loss"]
