"""Runs every benchmark and writes ``benchmarks/results.json`` and ``benchmarks/results.md``.

    python benchmarks/run.py                 # full sizes (~15 min on 2 cores)
    python benchmarks/run.py --quick         # small sizes (~2 min), same code paths
    python benchmarks/run.py --only ddp --only label_efficiency

Each figure is a ratio of two things measured side by side in this one run (interleaved, median
of the paired ratios), so a noisy machine still gives stable answers. ``--only`` merges into an
existing results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common
from benchmarks import (ddp, engine_efficiency, label_efficiency, mfu, predict_vs_teachers, scaling,
                        student_vs_teachers, world_throughput)
from benchmarks.common import machine
from benchmarks.report import write_markdown

HERE = Path(__file__).resolve().parent


def _scaling(**sizes: Any) -> list[dict[str, Any]]:
    rows = scaling.measure(**sizes)
    return [*rows, {"summary": scaling.summary(rows)}]


Benchmark = tuple[Callable[..., Any], dict[str, Any], dict[str, Any]]
BENCHMARKS: dict[str, Benchmark] = {
    # key: (function, full sizes, quick sizes)
    "student_vs_teachers": (student_vs_teachers.measure_both, {"batch_size": 8, "repeats": 5},
                            {"batch_size": 2, "size": 32, "repeats": 2, "paper_like": False}),
    "predict_vs_teachers": (predict_vs_teachers.measure, {"count": 64, "batch_size": 16, "repeats": 3},
                            {"count": 16, "size": 32, "batch_size": 8, "repeats": 1}),
    "label_efficiency": (label_efficiency.measure, {"count": 512, "repeats": 5},
                         {"count": 64, "batch_size": 16, "repeats": 1}),
    "engine_efficiency": (engine_efficiency.measure_engine, {"batch_size": 16, "steps": 3, "repeats": 3},
                          {"batch_size": 4, "size": 32, "steps": 2, "repeats": 2}),
    "bf16_speedup_train": (engine_efficiency.measure_precision,
                           {"batch_size": 16, "steps": 3, "repeats": 3, "schedule": 24, "eval_images": 64},
                           {"batch_size": 4, "size": 32, "steps": 2, "repeats": 2, "schedule": 4,
                            "eval_images": 8}),
    "mfu_train": (mfu.measure, {"batch_size": 8, "steps": 2, "repeats": 3},
                  {"backbones": ("resnet18_w0.25",), "batch_size": 4, "size": 32, "steps": 1, "repeats": 2}),
    "world_img_per_s_64": (world_throughput.measure_world, {"size": 64, "count": 240},
                           {"size": 64, "count": 24}),
    "world_img_per_s_128": (world_throughput.measure_world, {"size": 128, "count": 60},
                            {"size": 128, "count": 8}),
    "loader_vs_step": (world_throughput.measure_loader, {"batch_size": 16, "batches": 4, "steps": 2, "repeats": 3},
                       {"batch_size": 4, "size": 32, "batches": 2, "steps": 1, "repeats": 2, "images": 64}),
    "label_scaling": (_scaling, {"base": 64}, {"base": 8, "batch_size": 4}),
    "ddp_speedup": (ddp.measure, {"batch_size": 16, "steps": 3, "repeats": 3},
                    {"batch_size": 4, "steps": 1, "repeats": 1}),
}


def run(names: list[str], quick: bool, out: Path = HERE) -> dict[str, Any]:
    path = out / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.exists() and len(names) < len(BENCHMARKS) else {}
    results["machine"] = {**machine(), "quick": quick}
    common.WORLD_CAP = 64 if quick else None
    for name in names:
        function, full, small = BENCHMARKS[name]
        start = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        result = function(**(small if quick else full))
        seconds = time.perf_counter() - start
        if isinstance(result, dict):
            result["benchmark_seconds"] = seconds
        results[name] = result
        value = result.get("value") if isinstance(result, dict) else "see rows"
        print(f"[bench] {name}: {value} ({seconds:.0f} s)", flush=True)
        path.write_text(json.dumps(results, indent=1, default=float) + "\n")  # partial results survive
    write_markdown(results, out / "results.md")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, same code paths")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS), help="run only these")
    args = parser.parse_args()
    run(args.only or list(BENCHMARKS), args.quick)


if __name__ == "__main__":
    main()
