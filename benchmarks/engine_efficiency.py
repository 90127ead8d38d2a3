"""Engine overhead and precision (one loop for every stage: ``must.train.engine.fit``).

Engine: the step of ``fit`` (loss weighting, non-finite check, logging, scheduler, clipping) vs. a
hand-written loop doing the same work (forward, weighted sum of task losses, backward, clipping,
SGD), same model, same in-memory batches, in two configurations: ``minimal`` (fp32, equal weights,
no clipping) and ``demo_student`` (the demo student's recipe from ``configs/demo.yaml``: bf16
autocast, the MuST loss weights of its teachers' recipes, gradient norm clipped at 10). Target
>= 0.9 for both.

Precision: bf16 autocast vs. fp32 train step time on CPU, both through ``fit``. (The accuracy of
the two precisions after the demo's whole student schedule: ``python -m benchmarks.bf16_accuracy``.)

    python -m benchmarks.engine_efficiency
"""

from __future__ import annotations

import copy
import json
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from benchmarks.common import (StampedStream, batches_in_memory, hand_loop_seconds, interleave,
                               median, model_config, ratio_summary, sgd, student)
from must import config as config_lib
from must.data.sample import Batch
from must.tasks.base import Task
from must.train.config import TeacherRecipe, TrainConfig, WeightingConfig
from must.train.engine import fit
from must.train.weighting import must_weights

TARGET = 0.9


def demo_student_recipe() -> tuple[dict[str, float], float | None, str]:
    """The demo student's loss weights (the MuST rule over its teachers' batch sizes and learning
    rates and its own, MuST sec. 3.3), gradient clip and precision, from ``configs/demo.yaml``."""
    from must.stages.demo import DemoConfig  # benchmarks may read the pipeline's presets

    demo = config_lib.load(DemoConfig, "demo")
    train = demo.student.train
    recipes = {name: TeacherRecipe(plan.train.batch_size, plan.train.lr) for name, plan in demo.teachers.items()}
    weights = must_weights(config_lib.replace(train.weighting, teachers=recipes), list(demo.teachers),
                           train.batch_size, train.lr)
    precision = demo.precision if demo.precision != "auto" else train.precision
    return weights, train.grad_clip, precision


def fit_seconds(model: nn.Module, tasks: Mapping[str, Task], batches: Sequence[Batch], steps: int,
                precision: str = "fp32", lr: float = 0.01, weighting: WeightingConfig | None = None,
                grad_clip: float | None = None) -> float:
    """Seconds per step inside ``fit`` (first step left out), ``steps`` + 1 steps."""
    config = TrainConfig(steps=steps + 2, batch_size=len(batches[0]), lr=lr, precision=precision,
                         checkpoint_every=0, progress=False, device="cpu", grad_clip=grad_clip,
                         weighting=weighting or WeightingConfig())
    data = StampedStream(batches)
    with tempfile.TemporaryDirectory(prefix="engine-bench-") as out, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bf16 on CPU warns about oneDNN, measured on purpose here
        fit(model, tasks, data, config, out)
    return data.seconds_per_step()


def measure_one(tasks: Mapping[str, Task], model: nn.Module, batches: Sequence[Batch], steps: int,
                repeats: int, precision: str, weights: Mapping[str, float] | None, grad_clip: float | None,
                lr: float = 0.01) -> dict[str, Any]:
    """``fit`` vs. the hand loop with the same precision, loss weights (None: equal) and clipping;
    ``fit`` gets the weights as fixed weights of its MuST weighting."""
    weighting = WeightingConfig() if weights is None else WeightingConfig(method="must", weights=dict(weights))
    weights = dict(weights or {name: 1.0 for name in tasks})
    fit_model, hand_model = copy.deepcopy(model), copy.deepcopy(model)
    optimizer = sgd(hand_model, lr)
    times = interleave({
        "fit": lambda: fit_seconds(fit_model, tasks, batches, steps, precision, lr, weighting, grad_clip),
        "hand": lambda: hand_loop_seconds(hand_model, tasks, optimizer, batches, steps, precision,
                                          weights, grad_clip)}, repeats, shuffle_seed=0)
    ratio = ratio_summary(times, "hand", "fit")
    return {"value": ratio["median"], **{key: ratio[key] for key in ("q1", "q3", "rounds")},
            "meets_target": ratio["median"] >= TARGET,
            "fit_ms_per_step": 1000 * median(times["fit"]), "hand_ms_per_step": 1000 * median(times["hand"]),
            "precision": precision, "loss_weights": weights, "grad_clip": grad_clip, "seconds": times}


def measure_engine(batch_size: int = 16, size: int = 64, steps: int = 3, repeats: int = 7) -> dict[str, Any]:
    """``value``: the lower of the two configurations' ratios."""
    model, tasks = student(model_config())
    batches = batches_in_memory(tasks, 4, batch_size, size)
    weights, grad_clip, precision = demo_student_recipe()
    rows = {"minimal": measure_one(tasks, model, batches, steps, repeats, "fp32", None, None),
            "demo_student": measure_one(tasks, model, batches, steps, repeats, precision, weights, grad_clip)}
    value = min(row["value"] for row in rows.values())
    return {"value": value, "target": f">= {TARGET} (both configurations)", "meets_target": value >= TARGET,
            **rows, "batch_size": batch_size, "image_size": size, "steps_per_round": steps, "repeats": repeats}


def measure_precision(batch_size: int = 16, size: int = 64, steps: int = 3, repeats: int = 7) -> dict[str, Any]:
    """Step time fp32 / bf16 (> 1: bf16 is faster), both through ``fit``."""
    model, tasks = student(model_config())
    batches = batches_in_memory(tasks, 4, batch_size, size)
    models = {"fp32": copy.deepcopy(model), "bf16": copy.deepcopy(model)}
    times = interleave({name: (lambda name=name: fit_seconds(models[name], tasks, batches, steps, name))
                        for name in models}, repeats, shuffle_seed=0)
    speedup = ratio_summary(times, "fp32", "bf16")
    return {"value": speedup["median"], "target": "> 1 (informational)",
            **{key: speedup[key] for key in ("q1", "q3", "rounds")},
            "fp32_ms_per_step": 1000 * median(times["fp32"]), "bf16_ms_per_step": 1000 * median(times["bf16"]),
            "seconds": times, "batch_size": batch_size, "image_size": size, "repeats": repeats}


def main() -> dict[str, Any]:
    result = {"engine_efficiency": measure_engine(), "bf16_speedup_train": measure_precision()}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
