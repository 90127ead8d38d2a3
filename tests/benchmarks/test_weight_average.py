"""Smoke test of ``benchmarks.weight_average`` (one round, one update, the demo model)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ is not installed

from benchmarks.weight_average import CONFIGS, measure  # noqa: E402


def test_the_measurement_runs_and_only_the_full_average_moves_the_target_copy() -> None:
    row = measure(CONFIGS["demo_resnet18"], rounds=1, updates=1)
    assert row["target_max_abs_gap_after_3_steps"]["trained_averaged"] == 0.0
    assert row["target_max_abs_gap_after_3_steps"]["all_averaged"] > 0.0
    assert row["elements_averaged"] > row["elements_copied"] > 0
    assert len(row["trained_over_all"]["rounds"]) == 1
