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
    assert len(result["rounds"]) == 1 and result["q1"] <= result["value"] <= result["q3"]
    assert set(result["head_ms"]) == {"classification", "detection", "segmentation", "depth"}
    assert 0.25 < result["flop_predicted_ratio"] < 1
    assert result["timed_over_flops"] == result["value"] / result["flop_predicted_ratio"]


def test_flop_count_of_student_and_teachers() -> None:
    """Narrower pixel heads count fewer FLOPs, the trunk the same; RoIs reach the box head; the
    classification teacher runs no FPN, so the teachers cost the student's parts minus one FPN."""
    config = common.model_config(width=0.125, fpn_channels=16)
    options = dict(common.TASK_OPTIONS)
    wide = run.student_vs_teachers.count_flops(config, 32, options)
    narrow_options = run.student_vs_teachers.merged(options, {"segmentation": {"hidden_channels": 4}})
    narrow = run.student_vs_teachers.count_flops(config, 32, narrow_options)
    assert 0.25 < wide["ratio"] < 1 and wide["rois_per_image"] > 0
    assert narrow["backbone_gflops"] == wide["backbone_gflops"] and narrow["fpn_gflops"] == wide["fpn_gflops"]
    assert narrow["head_gflops"]["segmentation"] < wide["head_gflops"]["segmentation"]
    assert narrow["head_gflops"]["depth"] == wide["head_gflops"]["depth"]
    assert wide["teachers_without_fpn"] == ["classification"]
    parts = wide["backbone_gflops"] + wide["fpn_gflops"]
    assert wide["student_gflops"] == pytest.approx(parts + sum(wide["head_gflops"].values()), rel=1e-6)
    assert wide["teachers_total_gflops"] == pytest.approx(
        4 * parts - wide["fpn_gflops"] + sum(wide["head_gflops"].values()), rel=1e-6)
    assert wide["ratio"] > wide["ratio_if_every_teacher_ran_the_fpn"]
    # by hand: 3 convs 3x3 of 16 -> 16 channels on fused P2 (8 x 8 at 32 px), then 1x1 to 1 channel
    assert wide["head_gflops"]["depth"] * 1e9 == pytest.approx(3 * 2 * 9 * 16 * 16 * 64 + 2 * 16 * 1 * 64)


def test_paper_preset_is_read_from_its_yaml() -> None:
    config, size, teachers, student = run.student_vs_teachers.paper_preset(
        run.student_vs_teachers.NARROW_PIXEL_HEADS)
    assert (config.backbone, config.fpn_channels, size) == ("resnet152", 256, 640)
    assert teachers["detection"]["levels"] == ["p3", "p4", "p5", "p6", "p7"]
    assert teachers["depth"]["hidden_channels"] == student["segmentation"]["hidden_channels"] == 128


def test_engine_and_precision() -> None:
    engine = run.engine_efficiency.measure_engine(batch_size=2, steps=1, **TOY)
    assert _positive_finite(engine["value"]) and engine["value"] == min(
        engine["minimal"]["value"], engine["demo_student"]["value"])
    demo = engine["demo_student"]
    assert demo["precision"] == "bf16" and demo["grad_clip"] == 10.0
    assert demo["loss_weights"] == {"detection": 2.0, "segmentation": 2.0, "depth": 1.0, "classification": 1.0}
    precision = run.engine_efficiency.measure_precision(batch_size=2, steps=1, **TOY)
    assert _positive_finite(precision["value"])


def test_mfu_and_loader() -> None:
    result = run.mfu.measure(backbones=("resnet18_w0.25",), batch_size=2, steps=1, **TOY)
    row = result["per_backbone"]["resnet18_w0.25"]
    assert 0 < row["mfu"] < 1 and _positive_finite(row["step_gflop"]) and 0 < row["compute_kernel_time_share"] <= 1
    loader = run.world_throughput.measure_loader(batch_size=2, batches=1, steps=1, images=16, **TOY)
    assert _positive_finite(loader["value"]) and _positive_finite(loader["loader_images_per_s"])


def test_label_efficiency_and_world() -> None:
    result = run.label_efficiency.measure(count=8, size=32, batch_size=4, workers=0, repeats=2)
    assert _positive_finite(result["value"]) and result["images"] == 8 and len(result["rounds"]) == 2
    assert result["rounds"] == [b / l for b, l in zip(result["seconds"]["bare"], result["seconds"]["label"])]
    assert 0 < result["teacher_open_seconds"] < min(result["seconds"]["bare"])
    world = run.world_throughput.measure_world(32, 4)
    assert _positive_finite(world["value"])


@pytest.mark.slow
def test_subprocess_benchmarks() -> None:
    result = run.scaling.measure(sizes=(4, 8), batch_size=2)
    assert [row["images"] for row in result["rows"]] == [4, 8]
    assert all(_positive_finite(row["label_peak_tree_mb"]) for row in result["rows"])
    assert math.isfinite(result["value"])
    ddp = run.ddp.measure(batch_size=2, steps=1, repeats=1)
    assert _positive_finite(ddp["value"])


def _fake(value: float):
    return lambda **sizes: {"value": value, "target": ">= 0.9", "meets_target": value >= 0.9,
                            "q1": value - 0.01, "q3": value + 0.01, "rounds": [value] * 7}


def test_a_whole_run_writes_results_json_and_the_tables(tmp_path: Path) -> None:
    """Only every benchmark at full size writes results.json, stamped; the tables come from it;
    a separately measured figure (bf16 accuracy) survives the rewrite."""
    fakes = {"engine_efficiency": (_fake(0.95), {}, {}), "label_efficiency": (_fake(0.8), {}, {})}
    (tmp_path / "results.json").write_text(json.dumps({"bf16_vs_fp32": {"steps": 1280}, "stale": 1}))
    results = run.run(list(fakes), quick=False, out=tmp_path, benchmarks=fakes)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written == json.loads(json.dumps(results)) and "stale" not in written
    assert written["bf16_vs_fp32"] == {"steps": 1280}
    assert written["run"]["utc"].endswith("Z") and written["run"]["machine"]["cores"]
    assert len(written["run"]["commit"]) == 40
    assert not (tmp_path / "results-partial.json").exists()
    page = (tmp_path / "benchmarks.md").read_text()
    assert "| `engine_efficiency` | 0.95 | 0.94 - 0.96 (7 rounds) | >= 0.9 | yes |" in page
    assert "| `label_efficiency` | 0.8 |" in page and "**no**" in page
    assert written["run"]["commit"] in page and "engine_efficiency" in (tmp_path / "results.md").read_text()


def test_a_partial_or_quick_run_leaves_results_json_alone(tmp_path: Path) -> None:
    fakes = {"engine_efficiency": (_fake(0.95), {}, {}), "label_efficiency": (_fake(0.8), {}, {})}
    run.run(["engine_efficiency"], quick=False, out=tmp_path, benchmarks=fakes)
    run.run(list(fakes), quick=True, out=tmp_path, benchmarks=fakes)
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "benchmarks.md").exists()
    partial = json.loads((tmp_path / "results-partial.json").read_text())
    assert partial["run"]["quick"] and set(partial) == {"run", "engine_efficiency", "label_efficiency"}
    assert run.output_path(list(run.BENCHMARKS), quick=False).name == "results.json"
    assert run.output_path(["ddp_speedup"], quick=False).name == "results-partial.json"


def test_bf16_accuracy_records_its_own_entry(tmp_path: Path) -> None:
    from benchmarks import bf16_accuracy

    assert bf16_accuracy.difference({"depth": {"delta1": 0.4, "rmse": 1.0}}, {"depth": {"delta1": 0.5}}) == {
        "depth": {"delta1": pytest.approx(0.1)}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"engine_efficiency": {"value": 0.95}}))
    bf16_accuracy.record({"run": {"utc": "2026-01-01T00:00:00Z"}, "steps": 1280}, path)
    assert json.loads(path.read_text()) == {"engine_efficiency": {"value": 0.95},
                                            "bf16_vs_fp32": {"run": {"utc": "2026-01-01T00:00:00Z"}, "steps": 1280}}
    # its imports resolve (they sit inside train()): a run without a demo student stops, naming it
    with pytest.raises(SystemExit, match="no finished demo student"):
        bf16_accuracy.train(tmp_path / "no-run", tmp_path / "out", "fp32", 1)


def test_the_page_shows_each_detail_table() -> None:
    from benchmarks import report

    flops = {"ratio": 0.414, "ratio_if_every_teacher_ran_the_fpn": 0.397, "backbone_gflops": 187.9,
             "fpn_gflops": 46.5, "student_gflops": 463.7, "teachers_total_gflops": 1120.6,
             "head_gflops": {"classification": 0.004, "detection": 46.2, "segmentation": 92.3, "depth": 90.6}}
    timed = {"value": 0.5, "q1": 0.45, "q3": 0.55, "rounds": [0.5] * 7, "flop_predicted_ratio": 0.45,
             "timed_over_flops": 0.5 / 0.45, "image_size": 256, "batch_size": 4}
    results = {"run": {"commit": "abc", "utc": "2026-01-01T00:00:00Z", "machine": {"cores": 2}},
               "student_vs_teachers": {"value": 0.414, "target": "<= 0.35", "meets_target": False,
                                       "paper_preset_flops": {"preset_heads": flops}, "timed": {"resnet50_256px": timed}},
               "bf16_vs_fp32": {"run": {"commit": "def", "utc": "2026-01-02T00:00:00Z"}, "steps": 1280,
                                "metrics_fp32": {"depth": {"delta1": 0.4}}, "metrics_bf16": {"depth": {"delta1": 0.41}}}}
    page = report.markdown(results, "Benchmarks", detail=True)
    assert "| preset heads | 188 | 46.5 | 0.004 / 46.2 / 92.3 / 90.6 | 464 | 1,121 | 0.414 | 0.397 |" in page
    assert "| resnet50 256px (256 px, batch 4) | 0.500 | 0.45 - 0.55 (7 rounds) | 0.450 | 1.11 |" in page
    assert "commit `def`" in page and "| depth | delta1 | 0.4000 | 0.41 | 0.01 |" in page


def test_the_vit_row_times_vit_b16_at_256px(monkeypatch: pytest.MonkeyPatch) -> None:
    """ViT-B/16 + simple feature pyramid is timed (and FLOP-counted) beside the ResNet rows, at
    256 px with its smaller batch and round count; quick runs leave it out."""
    module = run.student_vs_teachers
    calls = []
    row = {"value": 0.5, "target": "<= 0.35", "meets_target": False}
    monkeypatch.setattr(module, "measure", lambda config=None, **kw: calls.append((config, kw)) or row)
    rows = module.measure_both(repeats=7, paper_like=False, paper_scale=False)["timed"]
    assert list(rows) == ["demo_model", "vit_b16_256px"]
    config, options = calls[-1]
    assert config.backbone == "timm:vit_base_patch16_224" and config.fpn_channels == 256
    assert options == {"batch_size": module.VIT_BATCH, "size": 256, "repeats": module.VIT_REPEATS}
    assert run.BENCHMARKS["student_vs_teachers"][2]["vit"] is False


def test_the_bare_side_opens_the_teachers_as_the_labeler_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """Like with like: both sides of a labeling-efficiency round open the teachers from disk."""
    module = run.label_efficiency
    clock = iter([10.0, 12.5])  # opening the two teachers takes 2.5 s
    monkeypatch.setattr(module.time, "perf_counter", lambda: next(clock))
    monkeypatch.setattr(module, "load_labeling_teacher", lambda directory, device: f"teacher {directory}")
    seen = []
    monkeypatch.setattr(module, "bare_forward", lambda teachers, batches: seen.append(teachers) or 4.0)
    opened: list[float] = []
    assert module.bare_round([Path("a"), Path("b")], [], opened) == 6.5
    assert opened == [2.5] and seen == [["teacher a", "teacher b"]]
