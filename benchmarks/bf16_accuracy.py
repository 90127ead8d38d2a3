"""bf16 vs. fp32 accuracy: the demo student's own validation metrics after its whole schedule
(1,280 steps in ``configs/demo.yaml``) in each precision, same seed, same teachers and pseudo
labels: a finished demo run's student config (``RUN/student/config.yaml``) trained twice, once
with ``train.precision=fp32`` and once with ``bf16``, in the demo's DDP processes.

A long run (two student trainings, ~15 min on a 2-core CPU), so not part of ``make bench``. The
result goes into ``benchmarks/results.json`` under ``bf16_vs_fp32`` with its own commit, time and
machine (the other figures are left as they are), and the tables are regenerated.

    make demo                                   # once: writes runs/demo
    python -m benchmarks.bf16_accuracy          # --run runs/demo --out runs/demo/bf16_accuracy
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.common import run_stamp
from benchmarks.report import HERE, write_reports

PRECISIONS = ("fp32", "bf16")
Metrics = Mapping[str, Mapping[str, float]]


def difference(fp32: Metrics, bf16: Metrics) -> dict[str, dict[str, float]]:
    """bf16 - fp32 for every metric both precisions report."""
    return {task: {metric: bf16[task][metric] - value for metric, value in values.items()
                   if metric in bf16.get(task, {})}
            for task, values in fp32.items() if task in bf16}


def train(run: Path, out: Path, precision: str, processes: int) -> dict[str, Any]:
    """Trains the run's student in ``precision`` into ``out``; its metrics (``student.json``)."""
    from must import config as config_lib
    from must.models.records import STUDENT_RECORD
    from must.stages.student import StudentConfig, launch_student

    path = run / "student" / "config.yaml"
    if not path.exists():
        raise SystemExit(f"{path}: no finished demo student here; run `make demo` (or `must demo --out {run}`) first")
    config = config_lib.from_dict(StudentConfig, config_lib.read_yaml(path))
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, precision=precision))
    start = time.perf_counter()
    launch_student(config, out, processes)
    record = json.loads((out / STUDENT_RECORD).read_text())
    return {"metrics": record["metrics"], "steps": record["steps"], "seconds": time.perf_counter() - start}


def record(result: Mapping[str, Any], results_path: Path = HERE / "results.json") -> None:
    """Sets ``bf16_vs_fp32`` in ``results_path`` (other figures untouched) and regenerates the
    tables when the file holds a full run."""
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    results["bf16_vs_fp32"] = dict(result)
    results_path.write_text(json.dumps(results, indent=1, default=float) + "\n")
    if "run" in results:
        write_reports(results, results_path.parent / "results.md", HERE.parent / "docs" / "benchmarks.md")


def demo_processes() -> int:
    """The demo preset's ``student.processes``: the student trains as the demo trains it."""
    from must import config as config_lib
    from must.stages.demo import DemoConfig

    return config_lib.load(DemoConfig, "demo").student.processes


def measure(run: Path, out: Path, processes: int) -> dict[str, Any]:
    stamp = run_stamp()
    trained = {precision: train(run, out / precision, precision, processes) for precision in PRECISIONS}
    steps = {row["steps"] for row in trained.values()}
    return {"run": stamp, "demo_run": str(run), "steps": steps.pop() if len(steps) == 1 else sorted(steps),
            "processes": processes, "metrics_fp32": trained["fp32"]["metrics"],
            "metrics_bf16": trained["bf16"]["metrics"],
            "metric_difference_bf16_minus_fp32": difference(trained["fp32"]["metrics"], trained["bf16"]["metrics"]),
            "seconds": {precision: row["seconds"] for precision, row in trained.items()},
            "wall_time_ratio_fp32_over_bf16": trained["fp32"]["seconds"] / trained["bf16"]["seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="a finished `must demo` output")
    parser.add_argument("--out", type=Path, default=None, help="default: RUN/bf16_accuracy")
    parser.add_argument("--processes", type=int, default=None,
                        help="DDP processes (default: the demo preset's student.processes)")
    args = parser.parse_args()
    result = measure(args.run, args.out or args.run / "bf16_accuracy", args.processes or demo_processes())
    record(result)
    print(json.dumps(result, indent=1, default=float))


if __name__ == "__main__":
    main()
