"""Throughput of the procedural world renderer (fast enough on a laptop CPU), and of the
training data loader against what a training step consumes.

World: ``count`` images cycling through every domain rendered by a pool of 2 processes (images/s
at 64x64 and 128x128); CPU time per image too, since wall time on a shared machine also measures
the neighbours.

Loader: ``must.data.loader.make_loader`` over a world dataset with the four tasks (decode, scale
jitter, crop, flip, collate) vs. the student's training step on in-memory batches, interleaved.
``loader_vs_step`` = loader images/s / step images/s; > 1 means the loader keeps up.

    python -m benchmarks.world_throughput
"""

from __future__ import annotations

import json
import multiprocessing
import time
from typing import Any

from benchmarks.common import (batches_in_memory, hand_loop_seconds, interleave, median,
                               model_config, pair_ratio, sgd, stream, student, world_dataset)
from must.world import DOMAINS, render_image

WORKERS = 2


def _render(job: tuple[str, int, int]) -> float:
    domain, index, size = job
    start = time.process_time()
    render_image(domain, 0, index, size)
    return time.process_time() - start


def _jobs(size: int, count: int, offset: int = 0) -> list[tuple[str, int, int]]:
    domains = list(DOMAINS)
    return [(domains[i % len(domains)], offset + i, size) for i in range(count)]


def measure_world(size: int, count: int) -> dict[str, Any]:
    """Images per second at ``size`` x ``size`` with 2 worker processes."""
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        pool.map(_render, _jobs(size, 2 * WORKERS, offset=10**6))  # warm up every worker
        wall = time.perf_counter()
        cpu = sum(pool.map(_render, _jobs(size, count), chunksize=4))
        wall = time.perf_counter() - wall
    return {"value": count / wall, "size": size, "count": count, "workers": WORKERS,
            "images_per_s_by_cpu_time": WORKERS * count / cpu, "cpu_ms_per_image": 1000 * cpu / count}


def _loader_seconds(loader, batches: int, batch_size: int) -> float:
    """Seconds per image over ``batches`` batches of a running loader."""
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return (time.perf_counter() - start) / (batches * batch_size)


def measure_loader(batch_size: int = 16, size: int = 64, workers: int = 0, batches: int = 4,
                   steps: int = 2, repeats: int = 3, images: int = 256) -> dict[str, Any]:
    """Loader images/s vs. training-step images/s (the demo student, fp32), interleaved.

    ``workers=0`` (default) times the loading work itself, in this process: the rate one worker
    core delivers. With workers, batches prefetched while the step ran would be timed as free."""
    model, tasks = student(model_config())
    optimizer = sgd(model)
    memory = batches_in_memory(tasks, 2, batch_size, size, images=images)
    loader = stream([world_dataset("scenes", images, size)], tasks, batch_size, size, workers)
    next(loader)  # workers started
    times = interleave({
        "loader": lambda: _loader_seconds(loader, batches, batch_size),
        "step": lambda: hand_loop_seconds(model, tasks, optimizer, memory, steps) / batch_size,
    }, repeats)
    ratio = pair_ratio(times, "step", "loader")
    return {"value": ratio, "target": "> 1", "meets_target": ratio > 1,
            "loader_images_per_s": 1 / median(times["loader"]),
            "step_images_per_s": 1 / median(times["step"]),
            "loader_workers": workers, "batch_size": batch_size, "image_size": size,
            "note": "loader measured in-process (one core's rate; W workers deliver up to W times "
                    "it), the step on all threads; in training the two share the cores"}


def main() -> dict[str, Any]:
    result = {"world_img_per_s_64": measure_world(64, 240), "world_img_per_s_128": measure_world(128, 60),
              "loader_vs_step": measure_loader()}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
