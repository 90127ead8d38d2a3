"""Shared by the task tests: fit one head on fixed features to check it can learn its target."""

from __future__ import annotations

import torch
from torch import nn

from must.data.sample import TaskBatch
from must.models.features import Features
from must.tasks import Task


def overfit_losses(task: Task, head: nn.Module, features: Features, target: TaskBatch, steps: int,
                   lr: float = 0.01) -> list[float]:
    """The task's loss at every step of Adam on ``head`` alone (features fixed)."""
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = task.loss(head(features), target)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
