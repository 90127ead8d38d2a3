"""Closeness to the machine's limit: model FLOP utilization (MFU) of a training step.

FLOPs of one training step (forward + backward) are counted by ``torch.utils.flop_counter``
(convolutions, matmuls; elementwise ops count zero), divided by the step's time; the peak is the
dense matmul rate measured in the same run and precision (``torch.mm`` of large square fp32
matrices), interleaved with the steps. Per backbone size: a single-head (classification) model,
so the figure is the trunk's. A profile splits the step into compute kernels (convolution,
matmul) and everything else (normalization, activations, pooling, optimizer), which is what
limits MFU on small images and narrow networks.

    python -m benchmarks.mfu
"""

from __future__ import annotations

import json
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (batches_in_memory, four_tasks, hand_step, interleave, median,
                               model_config, sgd)
from must.models import ModelConfig, build_model

BACKBONES: dict[str, ModelConfig] = {
    "resnet18_w0.25": model_config("resnet18", 0.25, 32),
    "resnet18_w1.0": model_config("resnet18", 1.0, 64),
    "resnet50_w1.0": model_config("resnet50", 1.0, 64),
}
COMPUTE_KERNELS = ("convolution", "conv2d", "addmm", "aten::mm", "bmm", "linear")


def matmul_seconds(n: int = 1024, count: int = 4) -> float:
    """Seconds for one ``n x n`` fp32 matmul (mean of ``count``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(count):
        torch.mm(a, b)
    return (time.perf_counter() - start) / count


def _compute_share(step) -> float:
    """Share of the step's self CPU time spent in convolution / matmul kernels."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        step()
    events = profile.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    compute = sum(event.self_cpu_time_total for event in events
                  if any(kernel in event.key for kernel in COMPUTE_KERNELS))
    return compute / total if total else float("nan")


def measure_one(config: ModelConfig, batch_size: int, size: int, steps: int, repeats: int,
                n: int = 1024) -> dict[str, Any]:
    tasks = four_tasks()
    task = {"classification": tasks["classification"]}
    torch.manual_seed(0)
    model = build_model(config, task).train()
    optimizer = sgd(model)
    batch = batches_in_memory(tasks, 1, batch_size, size)[0]
    batch.targets = {"classification": batch.targets["classification"]}
    step = lambda: hand_step(model, task, optimizer, batch)  # noqa: E731
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()

    def step_seconds() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        return (time.perf_counter() - start) / steps

    times = interleave({"step": step_seconds, "matmul": lambda: matmul_seconds(n)}, repeats)
    peak = 2 * n**3 / median(times["matmul"])
    achieved = flops / median(times["step"])
    share = _compute_share(step)
    return {"mfu": achieved / peak, "step_gflop": flops / 1e9, "achieved_gflops": achieved / 1e9,
            "peak_matmul_gflops": peak / 1e9, "ms_per_step": 1000 * median(times["step"]),
            "compute_kernel_time_share": share,
            # utilization while inside conv / matmul kernels only: their own efficiency
            "mfu_inside_compute_kernels": achieved / peak / share if share else float("nan"),
            "batch_size": batch_size, "image_size": size}


def measure(backbones: tuple[str, ...] = tuple(BACKBONES), batch_size: int = 8, size: int = 64,
            steps: int = 2, repeats: int = 2) -> dict[str, Any]:
    per_backbone = {name: measure_one(BACKBONES[name], batch_size, size, steps, repeats)
                    for name in backbones}
    headline = per_backbone.get("resnet18_w1.0") or next(iter(per_backbone.values()))
    return {"value": headline["mfu"], "target": "informational (fp32, vs measured torch.mm peak)",
            "headline_backbone": "resnet18_w1.0" if "resnet18_w1.0" in per_backbone else backbones[0],
            "per_backbone": per_backbone, "torch_threads": torch.get_num_threads()}


def main() -> dict[str, Any]:
    result = measure()
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
