"""Throughput of the procedural world renderer (SPEC B3: fast enough on a laptop CPU).

Renders ``count`` images cycling through every domain, first in this process (wall and CPU time
per image, per domain), then in a pool of 2 processes (the target: >= 200 images/s at 64x64 on 2
cores). CPU time is reported too because wall time on a shared machine measures the neighbours.

    python benchmarks/world_throughput.py            # 64 and 128 px
"""

from __future__ import annotations

import multiprocessing
import time

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


def measure(size: int, count: int) -> dict[str, float | int | dict[str, float]]:
    """Images per second at ``size`` x ``size``: in one process and with 2 worker processes."""
    _render(("objects", 0, size))  # textures load once per process
    per_domain: dict[str, list[float]] = {name: [] for name in DOMAINS}
    wall = time.perf_counter()
    for job in _jobs(size, count):
        per_domain[job[0]].append(_render(job))
    single_wall = time.perf_counter() - wall
    cpu = sum(sum(times) for times in per_domain.values())
    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        pool.map(_render, _jobs(size, 4 * WORKERS, offset=10**6))  # warm up every worker
        wall = time.perf_counter()
        pool_cpu = sum(pool.map(_render, _jobs(size, count), chunksize=8))
        pool_wall = time.perf_counter() - wall
    return {
        "size": size, "count": count, "workers": WORKERS,
        "images_per_s": count / pool_wall,
        "images_per_s_by_cpu_time": WORKERS * count / pool_cpu,
        "single_process_images_per_s": count / single_wall,
        "cpu_ms_per_image": 1000 * cpu / count,
        "cpu_ms_per_image_by_domain": {name: 1000 * sum(t) / max(len(t), 1)
                                       for name, t in per_domain.items()},
    }


def main() -> list[dict]:
    results = []
    for size, count in ((64, 600), (128, 180)):
        result = measure(size, count)
        results.append(result)
        domains = ", ".join(f"{k} {v:.1f}" for k, v in result["cpu_ms_per_image_by_domain"].items())
        print(f"{size}x{size}: {result['images_per_s']:.0f} images/s with {WORKERS} processes "
              f"(CPU-time bound {result['images_per_s_by_cpu_time']:.0f}/s), "
              f"{result['single_process_images_per_s']:.0f}/s in one process; "
              f"CPU ms/image: {result['cpu_ms_per_image']:.1f} ({domains})")
    return results


if __name__ == "__main__":
    main()
