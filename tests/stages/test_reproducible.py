"""The shipped ``tiny`` preset run twice from scratch, into two directories, gives the same bytes:
teachers, pseudo-label shards, student, a transfer cell and ``results.json`` (every random choice
is seeded; a rerun of the pipeline reproduces its numbers exactly). Bits hold for one torch thread
count (the tests run one): another count sums in another order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from must.stages.demo import TEACHER_DOMAINS, run_demo

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("stages_reproducible")]

CELL = Path("transfer") / "must" / "detection" / "cells" / "lr0.05-steps4"
"""One transfer cell: the student's detection fine-tuning (the most intricate head)."""
TIMES = {"results.json": ("timings",), "result.json": ("seconds",)}
"""Fields holding wall-clock times, the only thing allowed to differ between the two runs."""


def byte_identical_files(run: Path) -> list[Path]:
    """Files that must be equal byte for byte, relative to ``run``."""
    files = [*(Path("teachers") / task / "checkpoint.pt" for task in TEACHER_DOMAINS),
             *sorted(path.relative_to(run) for path in (run / "pseudo" / "pool").glob("*.tar")),
             Path("student") / "checkpoint.pt", CELL / "checkpoint.pt"]
    assert any(path.suffix == ".tar" for path in files), "no pseudo-label shard"
    return files


def without_times(path: Path) -> dict[str, Any]:
    """The JSON record at ``path`` without its wall-clock fields."""
    record = json.loads(path.read_text())
    return {key: value for key, value in record.items() if key not in TIMES[path.name]}


def test_tiny_preset_twice_from_scratch_gives_the_same_bytes(tmp_path: Path) -> None:
    runs = [tmp_path / name / "run" for name in ("first", "second")]  # results.json names the run
    for run in runs:
        assert run_demo("tiny", run) == 0
    first, second = runs
    for relative in byte_identical_files(first):
        assert (first / relative).read_bytes() == (second / relative).read_bytes(), relative
    for relative in (CELL / "result.json", Path("report") / "results.json"):
        assert without_times(first / relative) == without_times(second / relative), relative
