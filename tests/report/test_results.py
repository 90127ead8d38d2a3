"""collect_results: every number of the fake run, exactly, and notes instead of crashes."""

import json
from pathlib import Path
from typing import Any

import pytest

from must.report.results import (collect_results, eval_metrics, nested_metrics, order_inits, read_jsonl,
                                 student_metrics, write_results)


def test_transfer_values_and_differences(run_dir: Path, expected: Any) -> None:
    transfer, metrics = expected.transfer, expected.metrics
    results = collect_results(run_dir)
    assert set(results["transfer"]) == set(transfer)
    for init, row in transfer.items():
        assert set(results["transfer"][init]) == set(row)
        for task, value in row.items():
            entry = results["transfer"][init][task]
            assert entry["metric"] == metrics[task]
            assert entry["value"] == value
            assert entry["val_value"] == pytest.approx(value + 0.01)
            assert (entry["lr"], entry["steps"], entry["grid_cells"]) == (0.1, 200, 3)
            if init == "supervised":
                assert "delta_vs_supervised" not in entry
            else:
                assert entry["delta_vs_supervised"] == pytest.approx(value - transfer["supervised"][task])
    assert results["transfer"]["must"]["classification"]["delta_vs_supervised"] == pytest.approx(0.113)
    assert results["transfer"]["must"]["depth"]["delta_vs_supervised"] == pytest.approx(-0.02)


def test_linear_probe_is_its_own_table(run_dir: Path, expected: Any) -> None:
    linear = expected.linear
    results = collect_results(run_dir)
    probe = results["linear_probe"]
    assert {init: {t: e["value"] for t, e in row.items()} for init, row in probe.items()} == linear
    assert probe["must"]["classification"]["delta_vs_supervised"] == pytest.approx(0.03)
    # the linear results (mode "linear") never leak into the fine-tuning table
    assert "must_linear" not in results["transfer"] and "supervised_linear" not in results["transfer"]


def test_teacher_vs_student(run_dir: Path) -> None:
    results = collect_results(run_dir)
    table = results["teacher_vs_student"]
    assert set(table) == {"classification", "detection"}
    assert table["classification"]["metric"] == "top1"
    assert (table["classification"]["teacher"], table["classification"]["student"]) == (0.8, 0.75)
    assert table["classification"]["delta"] == pytest.approx(-0.05)
    # the detection teacher's json has no metrics: its last evaluation in metrics.jsonl counts
    assert (table["detection"]["metric"], table["detection"]["teacher"], table["detection"]["student"]) == (
        "ap50_voc", 0.42, 0.40)


def test_timings_and_json_round_trip(run_dir: Path, tmp_path: Path, expected: Any) -> None:
    results = collect_results(run_dir)
    assert results["timings"] == expected.timings
    assert results["notes"] == []
    path = write_results(results, tmp_path / "results.json")
    assert json.loads(path.read_text()) == results


def test_student_json_metrics_win_over_the_log(tmp_path: Path, files: Any) -> None:
    files.write_jsonl(tmp_path / "metrics.jsonl", [{"step": 1, "eval/depth/delta1": 0.1}])
    assert student_metrics(tmp_path) == {"depth": {"delta1": 0.1}}
    files.write_json(tmp_path / "student.json", {"metrics": {"depth": {"delta1": 0.9, "rmse": 0.3}}})
    assert student_metrics(tmp_path) == {"depth": {"delta1": 0.9, "rmse": 0.3}}


def test_metric_shapes_and_truncated_lines(tmp_path: Path) -> None:
    assert nested_metrics({"top1": 0.5}, "classification") == {"classification": {"top1": 0.5}}
    assert nested_metrics({"eval/depth/delta1": 0.4, "segmentation/miou": 0.3}) == {
        "depth": {"delta1": 0.4}, "segmentation": {"miou": 0.3}}
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1, "eval/depth/delta1": 0.2}\n{"step": 2, "eval/depth/delta1": 0.3}\n'
                    '{"step": 3, "ev')
    assert len(read_jsonl(path)) == 2
    assert eval_metrics(read_jsonl(path)) == {"depth": {"delta1": 0.3}}


def test_error_metrics_are_flagged(tmp_path: Path, files: Any) -> None:
    files.write_json(tmp_path / "transfer" / "must" / "depth" / "best.json",
               {"init": "must", "task": "depth", "metric": "rmse", "value": 0.4, "mode": "finetune"})
    entry = collect_results(tmp_path)["transfer"]["must"]["depth"]
    assert entry == {"metric": "rmse", "value": 0.4, "grid_cells": 0, "lower_is_better": True}


def test_empty_run_gives_notes_not_errors(tmp_path: Path, files: Any) -> None:
    files.write_json(tmp_path / "transfer" / "must" / "depth" / "best.json", {"init": "must", "value": "n/a"})
    results = collect_results(tmp_path)
    assert results["transfer"] == {} and results["teacher_vs_student"] == {} and results["timings"] == {}
    assert "linear_probe" not in results
    text = " ".join(results["notes"])
    for missing in ("no numeric 'value'", "no teachers", "no student metrics", "no transfer results",
                    "no timings.json"):
        assert missing in text


def test_row_order_follows_the_paper() -> None:
    assert order_inits(["must", "zeta", "must_depth", "supervised", "scratch", "simclr"]) == [
        "scratch", "supervised", "simclr", "zeta", "must_depth", "must"]
