"""Scoring a model on labeled validation data during and after training (the metrics teachers,
the student and transfer cells record, MuST sec. 4)."""

from __future__ import annotations

import torch
from torch import nn

from must.data.loader import make_eval_loader
from must.data.readers import ReaderDataset
from must.tasks import Task
from must.train.engine import Evaluate, FitResult, evaluate_tasks, resolve_precision


def final_evaluation(result: FitResult, evaluate: Evaluate | None) -> dict[str, float]:
    """The run's final scores; a rerun whose checkpoint was already final trains and evaluates
    nothing in ``fit``, so its model is scored here (else the records would lose their metrics)."""
    if result.evaluation or evaluate is None:
        return dict(result.evaluation)
    return dict(evaluate(result.ema if result.ema is not None else result.model, result.step))


def make_evaluator(task: Task, dataset: ReaderDataset | None, image_size: int, batch_size: int,
                   workers: int, device: torch.device, precision: str) -> Evaluate | None:
    """The engine's ``evaluate(model, step)`` over one labeled validation set."""
    if dataset is None:
        return None
    loader = make_eval_loader([dataset], {task.name: task}, batch_size, image_size, workers)
    resolved = resolve_precision(precision, device)

    def evaluate(model: nn.Module, step: int) -> dict[str, float]:
        results = evaluate_tasks(model, {task.name: task}, iter(loader), device, resolved)
        return {f"{task.name}/{name}": value for name, value in results.get(task.name, {}).items()}

    return evaluate
