"""``make gpu-check``: the CUDA tests and a tiny demo on the GPU, one summary line per check.

    python tests/cuda/gpu_check.py [--preset tiny] [--out runs/gpu-check] [--budget 480]

Checks, in order: a CUDA GPU is visible (else it says so and exits 1: nothing was checked);
every test marked ``cuda``; ``must demo --preset PRESET device=cuda`` from an empty run
directory, its results all finite; the whole within the budget (8 minutes on one GPU). Exit 0
only when every check passed. Logs: ``OUT/tests.log``, ``OUT/demo.log``. A preset that is not
shipped (yet) falls back to the test suite's tiny demo configuration (tests/stages/test_demo.py).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]


def gpu_line() -> tuple[bool, str]:
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "no CUDA"
    if not torch.cuda.is_available():
        return False, (f"gpu: NONE -- torch.cuda.is_available() is False (torch {torch.__version__}, built "
                       f"with {build}); nothing was checked")
    properties = torch.cuda.get_device_properties(0)
    bf16 = "native" if properties.major >= 8 else "emulated: auto precision is fp32"
    return True, (f"gpu: {properties.name}, compute capability {properties.major}.{properties.minor}, "
                  f"{properties.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s); "
                  f"torch {torch.__version__} ({build}); bf16 {bf16}")


def run_tests(out: Path, timeout: float) -> list[tuple[bool, str]]:
    """Every ``cuda`` test in its own pytest process; one (passed, line) per test."""
    report = out / "tests.xml"
    command = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "cuda"), "-m", "cuda", "-q",
               "-p", "no:cacheprovider", "-o", "addopts=-ra --import-mode=importlib",  # no pytest-timeout needed
               f"--junitxml={report}"]
    with open(out / "tests.log", "w") as log:
        try:
            code = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return [(False, f"cuda tests: FAILED, still running after {timeout:.0f} s (log: {out / 'tests.log'})")]
    if not report.exists():
        return [(False, f"cuda tests: FAILED, pytest exited {code} before running any (log: {out / 'tests.log'})")]
    lines = []
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = f"{Path(case.get('file') or case.get('classname', '').replace('.', '/')).stem}::{case.get('name')}"
        outcome = ("FAILED" if case.find("failure") is not None or case.find("error") is not None
                   else "skipped" if case.find("skipped") is not None else "passed")
        lines.append((outcome == "passed", f"cuda test {name}: {outcome} ({float(case.get('time', 0)):.1f} s)"))
    if not lines:
        return [(False, f"cuda tests: FAILED, none ran (pytest exit {code}; log: {out / 'tests.log'})")]
    return lines


def tiny_preset(out: Path) -> str:
    """The test suite's tiny demo configuration as a preset file (when ``tiny`` is not shipped)."""
    sys.path.insert(0, str(ROOT))
    from tests.stages.test_demo import tiny_preset as tiny  # noqa: PLC0415  (only for this fallback)

    path = out / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny(out / "demo")))
    return str(path)


def run_demo(preset: str, out: Path, timeout: float) -> tuple[bool, str]:
    from must.config import preset_names

    if not Path(preset).exists() and preset not in preset_names():
        preset = tiny_preset(out)
    command = [sys.executable, "-m", "must.cli", "demo", "--preset", preset, "--out", str(out / "demo"), "device=cuda"]
    start = time.perf_counter()
    with open(out / "demo.log", "w") as log:
        try:
            code = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return False, f"demo on cuda: FAILED, still running after {timeout:.0f} s (log: {out / 'demo.log'})"
    seconds = time.perf_counter() - start
    if code != 0:
        last = (out / "demo.log").read_text().strip().splitlines()[-1:] or [""]
        return False, (f"demo on cuda: FAILED, exit {code} after {seconds:.0f} s: {last[0][:200]} "
                       f"(log: {out / 'demo.log'})")
    return demo_results(out / "demo", seconds)


def demo_results(run: Path, seconds: float) -> tuple[bool, str]:
    path = run / "report" / "results.json"
    if not path.exists():
        return False, f"demo on cuda: FAILED, no {path} after {seconds:.0f} s"
    results = json.loads(path.read_text())
    values = [entry["value"] for row in results.get("transfer", {}).values() for entry in row.values()]
    values += [value for pair in results.get("teacher_vs_student", {}).values() for value in pair.values()
               if isinstance(value, (int, float))]
    finite = bool(values) and all(math.isfinite(value) for value in values)
    state = "passed" if finite else "FAILED, a result is not finite"
    return finite, (f"demo on cuda: {state} in {seconds:.0f} s ({len(values)} results in {path}; the tiny "
                    "preset's numbers mean nothing)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="demo preset: a shipped name or a YAML path")
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-check"), help="logs and the demo's run")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds the whole check may take")
    args = parser.parse_args()
    start = time.perf_counter()
    present, line = gpu_line()
    print(line, flush=True)
    if not present:
        return 1
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)  # a check runs from scratch, never resumes
    out.mkdir(parents=True)
    results = run_tests(out, args.budget)
    for _, line in results:
        print(line, flush=True)
    remaining = max(60.0, args.budget - (time.perf_counter() - start))
    results.append(run_demo(args.preset, out, remaining))
    print(results[-1][1], flush=True)
    total = time.perf_counter() - start
    within = total <= args.budget
    print(f"total: {total:.0f} s, {'within' if within else 'OVER'} the {args.budget:.0f} s budget", flush=True)
    passed = all(ok for ok, _ in results) and within
    print(f"gpu-check: {'passed' if passed else 'FAILED'}", flush=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
