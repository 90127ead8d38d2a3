"""Smoke test of every benchmark at a toy size: each returns its figure under the stable keys, and
every ratio is a positive finite number. (The figures themselves are not asserted: CI machines
differ; ``python benchmarks/run.py`` reports them.)"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the benchmarks/ folder is not part of the installed package

from benchmarks import common, run  # noqa: E402

TOY = {"size": 32, "repeats": 1}


@pytest.fixture(autouse=True)
def small_world(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "WORLD_CAP", 16)
    monkeypatch.setattr(common, "CACHE", tmp_path_factory.getbasetemp() / "bench-cache")


def _positive_finite(value: object) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


def test_student_vs_teachers() -> None:
    result = run.student_vs_teachers.measure(batch_size=2, **TOY)
    assert _positive_finite(result["value"]) and result["value"] < 1.5
    assert set(result["head_ms"]) == {"classification", "detection", "segmentation", "depth"}


def test_flop_count_of_student_and_heads() -> None:
    """Narrower pixel heads count fewer FLOPs, the trunk the same; RoIs reach the box head."""
    config = common.model_config(width=0.125, fpn_channels=16)
    wide = run.student_vs_teachers.count_flops(config, 32)
    narrow = run.student_vs_teachers.count_flops(config, 32, {"segmentation": {"hidden_channels": 4}})
    assert 0.25 < wide["ratio"] < 1 and wide["rois"] > 0
    assert narrow["trunk_gflops"] == wide["trunk_gflops"]
    assert narrow["head_gflops"]["segmentation"] < wide["head_gflops"]["segmentation"]
    assert narrow["head_gflops"]["depth"] == wide["head_gflops"]["depth"]


def test_engine_and_precision() -> None:
    engine = run.engine_efficiency.measure_engine(batch_size=2, steps=1, **TOY)
    assert _positive_finite(engine["value"]) and _positive_finite(engine["fit_ms_per_step"])
    precision = run.engine_efficiency.measure_precision(batch_size=2, steps=1, schedule=3, eval_images=2, **TOY)
    assert _positive_finite(precision["value"])
    assert set(precision["metric_difference_bf16_minus_fp32"]) == {"classification", "detection",
                                                                  "segmentation", "depth"}


def test_mfu_and_loader() -> None:
    result = run.mfu.measure(backbones=("resnet18_w0.25",), batch_size=2, steps=1, **TOY)
    row = result["per_backbone"]["resnet18_w0.25"]
    assert 0 < row["mfu"] < 1 and _positive_finite(row["step_gflop"]) and 0 < row["compute_kernel_time_share"] <= 1
    loader = run.world_throughput.measure_loader(batch_size=2, batches=1, steps=1, images=16, **TOY)
    assert _positive_finite(loader["value"]) and _positive_finite(loader["loader_images_per_s"])


def test_label_efficiency_and_world() -> None:
    result = run.label_efficiency.measure(count=8, size=32, batch_size=4, workers=0, repeats=1)
    # ``value`` is a difference of two whole runs (all images minus the first half): at 4 images
    # the other test worker's noise can make it negative, so only the whole-run figures are signed
    assert math.isfinite(result["value"]) and result["images"] == 8
    assert _positive_finite(result["with_startup"]) and _positive_finite(result["label_images_per_s_whole_run"])
    world = run.world_throughput.measure_world(32, 4)
    assert _positive_finite(world["value"])


@pytest.mark.slow
def test_subprocess_benchmarks() -> None:
    rows = run.scaling.measure(base=4, scales=(1, 2), batch_size=2)
    assert [row["images"] for row in rows] == [4, 8]
    assert all(_positive_finite(value) for value in run.scaling.summary(rows).values())
    ddp = run.ddp.measure(batch_size=2, steps=1, repeats=1)
    assert _positive_finite(ddp["value"])


def test_report(tmp_path: Path) -> None:
    results = {"machine": common.machine(), "engine_efficiency": {"value": 0.95, "target": ">= 0.9"},
               "label_scaling": [{"summary": {"label_time_per_image_ratio": 1.0, "label_peak_rss_ratio": 1.0,
                                              "train_time_per_image_ratio": 1.1, "train_peak_rss_ratio": 1.0}}]}
    run.write_markdown(results, tmp_path / "results.md")
    text = (tmp_path / "results.md").read_text()
    assert "| `engine_efficiency` | 0.95 | >= 0.9 |" in text and "label 1.00" in text
    assert json.dumps(results)
