"""What ``must demo`` prints when it ends: the transfer table (paper Table 2), teacher vs student,
the total time and where the report is."""

from __future__ import annotations

import json
from pathlib import Path


def print_summary(run: Path) -> None:
    """The demo's table: transfer score per pre-training and downstream task (paper Table 2), as
    the report's :func:`~must.report.tables.transfer_table` builds it."""
    results_path = run / "report" / "results.json"
    if not results_path.exists():
        print(f"\nrun directory: {run}")
        return
    from must.report.tables import to_text, transfer_table

    results = json.loads(results_path.read_text())
    table = transfer_table(results.get("transfer", {}))
    if table is not None:
        print("\n" + to_text(table))
    pairs = results.get("teacher_vs_student", {})
    if pairs:
        print("teacher vs student (validation): " + ", ".join(
            f"{t} {p['teacher']:.3f} -> {p['student']:.3f}" for t, p in pairs.items()))
    timings = results.get("timings", {})
    if "total" in timings:
        print(f"total time: {timings['total'] / 60:.1f} min")
    print(f"report: {run / 'report' / 'index.html'}")
