"""``docs/methods.md`` is generated from ``docs/measurements/`` (``python -m benchmarks.methods_page``):
the published page equals what the measurements give, and each table shows the recorded numbers."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.methods_page import MEASUREMENTS, PAGE, render


def test_the_published_page_is_generated_from_the_measurements() -> None:
    assert PAGE.read_text() == render(MEASUREMENTS), "rerun: python -m benchmarks.methods_page"


def test_each_table_shows_its_measured_numbers(tmp_path: Path) -> None:
    stamp = {"commit": "abcdef0123", "utc": "2026-12-06T12:00:00Z", "command": "python -m x"}
    (tmp_path / "ssl_transfer.json").write_text(json.dumps({
        **stamp, "demo_command": "must demo ...", "schedule": {"steps": 120, "batch_size": 32, "lr": 0.05},
        "rows": {"byol": {"transfer": {"classification": 0.8123, "detection": 0.2}, "mean": 0.41234,
                          "knn": {"classification": 0.7011}, "pretrain": {"losses": {"loss": -0.5432}}}}}))
    (tmp_path / "semi.json").write_text(json.dumps({
        **stamp, "schedule": {"steps": 2000, "labeled_batch": 8, "mu": 3}, "labels_per_class": 40,
        "unlabeled": 5000, "test_images": 1000, "rows": {"flexmatch": {"top1": 0.7761, "seconds": 548.1}}}))
    page = render(tmp_path)
    assert "| byol | 81.2 | 20.0 |  |  |  | 41.2 | 70.1 | -0.543 |" in page  # x100, missing cells blank
    assert "| flexmatch | 0.776 | 548 |" in page and "400 labeled and 5,000 unlabeled" in page
    assert "`abcdef0`" in page and "weightings" not in page.lower().split("## ")[-1]
    assert "## Multi-task weightings" not in page  # no weightings.json here: no section
