"""Runs every benchmark and writes ``benchmarks/results.json`` whole, then the tables generated
from it (``benchmarks/results.md``, ``docs/benchmarks.md``).

    python benchmarks/run.py                 # every benchmark, full sizes (~17 min on a quiet 2-core CPU)
    python benchmarks/run.py --quick         # small sizes, same code paths -> results-partial.json
    python benchmarks/run.py --only ddp --only label_efficiency               -> results-partial.json

Only a full run of every benchmark writes ``results.json`` (at the end, in one piece), stamped with
the commit, the UTC time and the machine; anything less writes ``results-partial.json`` and leaves
the published figures alone. The bf16 accuracy comparison is a separate long run
(``python -m benchmarks.bf16_accuracy``) recorded in ``results.json`` under its own stamp; a full
run keeps that entry.
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
from benchmarks.common import run_stamp
from benchmarks.report import SEPARATE_RUNS, write_reports

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "benchmarks.md"

Benchmark = tuple[Callable[..., Any], dict[str, Any], dict[str, Any]]
BENCHMARKS: dict[str, Benchmark] = {
    # key: (function, full sizes, quick sizes); expected minutes on a quiet 2-core CPU in comments
    "student_vs_teachers": (student_vs_teachers.measure_both, {"batch_size": 8, "repeats": 7},  # ~4
                            {"batch_size": 2, "size": 32, "repeats": 2, "paper_like": False, "paper_scale": False,
                             "vit": False}),
    "predict_vs_teachers": (predict_vs_teachers.measure, {"count": 64, "batch_size": 16, "repeats": 3},  # ~3
                            {"count": 16, "size": 32, "batch_size": 8, "repeats": 1}),
    "label_efficiency": (label_efficiency.measure, {"count": 512, "repeats": 7},  # ~1.5
                         {"count": 64, "batch_size": 16, "repeats": 2}),
    "engine_efficiency": (engine_efficiency.measure_engine, {"batch_size": 16, "steps": 3, "repeats": 7},  # ~2
                          {"batch_size": 4, "size": 32, "steps": 1, "repeats": 2}),
    "bf16_speedup_train": (engine_efficiency.measure_precision, {"batch_size": 16, "steps": 3, "repeats": 7},  # ~1
                           {"batch_size": 4, "size": 32, "steps": 1, "repeats": 2}),
    "mfu_train": (mfu.measure, {"batch_size": 8, "steps": 2, "repeats": 3},  # ~0.2
                  {"backbones": ("resnet18_w0.25",), "batch_size": 4, "size": 32, "steps": 1, "repeats": 2}),
    "world_img_per_s_64": (world_throughput.measure_world, {"size": 64, "count": 240},  # ~0.1
                           {"size": 64, "count": 24}),
    "world_img_per_s_128": (world_throughput.measure_world, {"size": 128, "count": 60},  # ~0.1
                            {"size": 128, "count": 8}),
    "loader_vs_step": (world_throughput.measure_loader, {"batch_size": 16, "batches": 4, "steps": 2, "repeats": 5},
                       {"batch_size": 4, "size": 32, "batches": 2, "steps": 1, "repeats": 2, "images": 64}),  # ~0.2
    # 1,000 / 2,000 / 8,000 images (~7 min with the 8,000-image pool's generation); 1k / 4k /
    # 16k: `python -m benchmarks.scaling` (~15 min)
    "label_scaling": (scaling.measure, {"sizes": (1000, 2000, 8000)}, {"sizes": (16, 32), "batch_size": 4}),
    "ddp_speedup": (ddp.measure, {"batch_size": 16, "steps": 3, "repeats": 3},  # ~1
                    {"batch_size": 4, "steps": 1, "repeats": 1}),
}


def output_path(names: list[str], quick: bool, out: Path = HERE,
                benchmarks: dict[str, Benchmark] | None = None) -> Path:
    """``results.json`` for a full run of every benchmark, ``results-partial.json`` otherwise."""
    whole = not quick and list(names) == list(benchmarks or BENCHMARKS)
    return out / ("results.json" if whole else "results-partial.json")


def run(names: list[str], quick: bool, out: Path = HERE,
        benchmarks: dict[str, Benchmark] | None = None) -> dict[str, Any]:
    benchmarks = benchmarks or BENCHMARKS
    path = output_path(names, quick, out, benchmarks)
    results: dict[str, Any] = {"run": {**run_stamp(), "quick": quick, "benchmarks": list(names)}}
    common.WORLD_CAP = 64 if quick else None
    progress = out / "results-partial.json"
    start_run = time.perf_counter()
    for name in names:
        function, full, small = benchmarks[name]
        start = time.perf_counter()
        print(f"[bench] {name} ...", flush=True)
        result = function(**(small if quick else full))
        seconds = time.perf_counter() - start
        results[name] = {**result, "benchmark_seconds": seconds}
        print(f"[bench] {name}: {result.get('value')} ({seconds:.0f} s)", flush=True)
        progress.write_text(json.dumps(results, indent=1, default=float) + "\n")  # survives a crash
    results["run"]["seconds"] = time.perf_counter() - start_run
    if path.name == "results.json":
        previous = json.loads(path.read_text()) if path.exists() else {}
        results.update({key: previous[key] for key in SEPARATE_RUNS if key in previous})
    path.write_text(json.dumps(results, indent=1, default=float) + "\n")
    if path.name == "results.json":
        if progress.exists():
            progress.unlink()
        write_reports(results, out / "results.md", DOCS if out == HERE else out / "benchmarks.md")
    print(f"[bench] wrote {path}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, same code paths")
    parser.add_argument("--only", action="append", choices=list(BENCHMARKS), help="run only these")
    args = parser.parse_args()
    run(args.only or list(BENCHMARKS), args.quick)


if __name__ == "__main__":
    main()
