"""Engine overhead and precision (DESIGN.md "Training": one loop for every stage).

Engine: the step of ``must.train.engine.fit`` (loss balancing, non-finite check, logging,
scheduler) vs. a minimal hand-written loop (forward, summed task losses, backward, SGD), same
model, same in-memory batches, same precision. Target >= 0.9.

Precision: bf16 autocast vs. fp32 train step on CPU, both through ``fit``; then the accuracy after
the same short fixed schedule from the same initial weights, each task's metric on held-out
images. (FPN's P6/P7 always run in fp32: oneDNN's bf16 gradient bug, see ``must.models.fpn``.)

    python -m benchmarks.engine_efficiency
"""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from benchmarks.common import (StampedStream, batches_in_memory, hand_loop_seconds, held_out_batches,
                               interleave,
                               median, model_config, pair_ratio, sgd, student)
from must.data.sample import Batch
from must.tasks.base import Task
from must.train.config import TrainConfig
from must.train.engine import evaluate_tasks, fit

TARGET = 0.9


def fit_seconds(model: nn.Module, tasks: Mapping[str, Task], batches: Sequence[Batch], steps: int,
                precision: str = "fp32", lr: float = 0.01) -> float:
    """Seconds per step inside ``fit`` (first step left out), ``steps`` + 1 steps."""
    config = TrainConfig(steps=steps + 2, batch_size=len(batches[0]), lr=lr, precision=precision,
                         checkpoint_every=0, progress=False, device="cpu")
    data = StampedStream(batches)
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on CPU warns about oneDNN, measured on purpose here
        fit(model, tasks, data, config, out)
    return data.seconds_per_step()


def measure_engine(batch_size: int = 16, size: int = 64, steps: int = 4,
                   repeats: int = 3) -> dict[str, Any]:
    model, tasks = student(model_config())
    batches = batches_in_memory(tasks, 4, batch_size, size)
    hand_model = copy.deepcopy(model)
    optimizer = sgd(hand_model)
    times = interleave({"fit": lambda: fit_seconds(model, tasks, batches, steps),
                        "hand": lambda: hand_loop_seconds(hand_model, tasks, optimizer, batches, steps)},
                       repeats)
    ratio = pair_ratio(times, "hand", "fit")
    return {"value": ratio, "target": f">= {TARGET}", "meets_target": ratio >= TARGET,
            "fit_ms_per_step": 1000 * median(times["fit"]),
            "hand_ms_per_step": 1000 * median(times["hand"]),
            "batch_size": batch_size, "image_size": size, "steps_per_round": steps, "repeats": repeats}


def measure_precision(batch_size: int = 16, size: int = 64, steps: int = 4, repeats: int = 3,
                      schedule: int = 40, eval_images: int = 64) -> dict[str, Any]:
    """Step time fp32 / bf16 (> 1: bf16 is faster) and the metrics after ``schedule`` steps."""
    model, tasks = student(model_config())
    batches = batches_in_memory(tasks, 4, batch_size, size)
    models = {"fp32": copy.deepcopy(model), "bf16": copy.deepcopy(model)}
    times = interleave({name: (lambda name=name: fit_seconds(models[name], tasks, batches, steps, name))
                        for name in models}, repeats)
    speedup = pair_ratio(times, "fp32", "bf16")
    train = batches_in_memory(tasks, schedule, batch_size, size)
    held_out = held_out_batches(tasks, eval_images, batch_size, size)
    metrics = {}
    for name in ("fp32", "bf16"):
        trained = copy.deepcopy(model)
        fit_seconds(trained, tasks, train, schedule - 2, name, lr=0.02)
        metrics[name] = evaluate_tasks(trained, tasks, held_out, torch.device("cpu"), name)  # type: ignore[arg-type]
    difference = {task: {metric: metrics["bf16"][task][metric] - value for metric, value in values.items()}
                  for task, values in metrics["fp32"].items()}
    return {"value": speedup, "target": "> 1 (informational)",
            "fp32_ms_per_step": 1000 * median(times["fp32"]),
            "bf16_ms_per_step": 1000 * median(times["bf16"]),
            "schedule_steps": schedule, "metrics_fp32": metrics["fp32"], "metrics_bf16": metrics["bf16"],
            "metric_difference_bf16_minus_fp32": difference,
            "batch_size": batch_size, "image_size": size, "repeats": repeats}


def main() -> dict[str, Any]:
    result = {"engine_efficiency": measure_engine(), "bf16_speedup_train": measure_precision()}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
