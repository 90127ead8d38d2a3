"""The benchmark tables, generated from ``benchmarks/results.json`` and nothing else:
``benchmarks/results.md`` (one row per figure) and ``docs/benchmarks.md`` (the published page:
every figure with its quartiles and target, the detail tables, the run's commit, time and machine).

    python -m benchmarks.report          # rewrite both from results.json
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SEPARATE_RUNS = ("bf16_vs_fp32",)
"""Figures measured by their own long command, each stamped with its own commit and time."""

ROWS: dict[str, tuple[str, str]] = {
    # key: (what it means, how measured)
    "student_vs_teachers": ("student forward / the four teachers' forwards, by FLOPs at the paper preset",
                            "`torch.utils.flop_counter`, one 640 px image, `configs/paper.yaml`'s model and "
                            "heads; timed ratios beside their FLOP-predicted ones below"),
    "predict_vs_teachers": ("`must predict` time, student / four teachers one after another",
                            "end to end (decode, fit, forward, map back, write every file), same "
                            "images and weights, fresh outputs each round; images/s of both in JSON"),
    "label_efficiency": ("bare teachers' forward time / `label_dataset` time, same 512 images",
                         "one process, rounds in shuffled order, median of the per-round ratios; the "
                         "labeling side is a whole run; both sides open the teachers from disk"),
    "engine_efficiency": ("hand loop step time / `fit` step time, lower of two configurations",
                          "minimal (fp32, equal weights) and the demo student's (bf16, MuST weights, clip 10); "
                          "same model and in-memory batches"),
    "bf16_speedup_train": ("fp32 step time / bf16 autocast step time (CPU)", "both through `fit`, shuffled rounds"),
    "mfu_train": ("achieved FLOP/s of a train step / measured fp32 matmul peak",
                  "FlopCounterMode FLOPs; peak = torch.mm 1024^2 interleaved; per backbone in JSON"),
    "world_img_per_s_64": ("world images/s at 64x64, 2 processes", "render_image in a spawn pool"),
    "world_img_per_s_128": ("world images/s at 128x128, 2 processes", "render_image in a spawn pool"),
    "loader_vs_step": ("loader images/s / training step images/s (> 1: loader keeps up)",
                       "make_loader over a world set (in-process) vs the student's step, interleaved"),
    "label_scaling": ("bytes of peak memory per added image (labeling or one training epoch, the larger)",
                      "fresh subprocess per count; peak memory of its whole process tree, loader "
                      "workers included (sum of PSS: shared pages once; psutil); least-squares slope"),
    "ddp_speedup": ("step time 1 process / 2 processes, same global batch",
                    "torchrun gloo, cores split evenly (2x1 thread vs 1x2 threads)"),
}


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "" if value is None else str(value)
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _met(result: Mapping[str, Any]) -> str:
    return {True: "yes", False: "**no**"}.get(result.get("meets_target"), "")


def _spread(result: Mapping[str, Any]) -> str:
    if "q1" not in result:
        return ""
    return f"{_number(result['q1'])} - {_number(result['q3'])} ({len(result.get('rounds', []))} rounds)"


def _stamp(stamp: Mapping[str, Any]) -> str:
    machine = stamp.get("machine", {})
    dirty = " (with uncommitted changes)" if stamp.get("uncommitted_changes") else ""
    return (f"commit `{stamp.get('commit')}`{dirty}, {stamp.get('utc')}; {machine.get('cpu')}, "
            f"{machine.get('cores')} cores, torch {machine.get('torch')}, {machine.get('torch_threads')} "
            f"threads, load {_number(machine.get('load_average_1min'))} at the start")


def figure_table(results: Mapping[str, Any]) -> list[str]:
    lines = ["| figure | value | quartiles | target | met | what it means | how measured |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for key, (meaning, how) in ROWS.items():
        if key in results:
            result = results[key]
            lines.append(f"| `{key}` | {_number(result.get('value'))} | {_spread(result)} | "
                         f"{result.get('target', '')} | {_met(result)} | {meaning} | {how} |")
    return lines


def student_tables(result: Mapping[str, Any]) -> list[str]:
    lines = []
    flops = result.get("paper_preset_flops", {})
    if flops:
        lines += ["### Student vs. teachers: FLOPs at the paper preset", "",
                  "One 640 px image, `configs/paper.yaml` (ResNet-152-FPN, its heads and options), "
                  "`torch.utils.flop_counter`; a teacher whose head reads only C5 runs no FPN.", "",
                  "| heads | backbone | FPN | heads (cls / det / seg / depth) | student | teachers | ratio "
                  "| ratio if every teacher ran the FPN |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, row in flops.items():
            heads = " / ".join(_number(row["head_gflops"].get(task)) for task in
                               ("classification", "detection", "segmentation", "depth"))
            lines.append(f"| {name.replace('_', ' ')} | {_number(row['backbone_gflops'])} | "
                         f"{_number(row['fpn_gflops'])} | {heads} | {_number(row['student_gflops'])} | "
                         f"{_number(row['teachers_total_gflops'])} | {row['ratio']:.3f} | "
                         f"{row['ratio_if_every_teacher_ran_the_fpn']:.3f} |")
        lines += ["", "GFLOPs per image.", ""]
    timed = result.get("timed", {})
    if timed:
        lines += ["### Student vs. teachers: timed, beside the FLOP-predicted ratio", "",
                  "| model | timed ratio | quartiles | FLOP-predicted | timed / FLOPs (target <= 1.15) |",
                  "| --- | --- | --- | --- | --- |"]
        for name, row in timed.items():
            lines.append(f"| {name.replace('_', ' ')} ({row['image_size']} px, batch {row['batch_size']}) | "
                         f"{row['value']:.3f} | {_spread(row)} | {row['flop_predicted_ratio']:.3f} | "
                         f"{row['timed_over_flops']:.2f} |")
        lines.append("")
    return lines


def detail_tables(results: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    if "student_vs_teachers" in results:
        lines += student_tables(results["student_vs_teachers"])
    engine = results.get("engine_efficiency", {})
    if "minimal" in engine:
        lines += ["### Engine efficiency", "", "| configuration | hand / fit | quartiles | fit ms/step | hand ms/step |",
                  "| --- | --- | --- | --- | --- |"]
        for name in ("minimal", "demo_student"):
            row = engine[name]
            lines.append(f"| {name.replace('_', ' ')} ({row['precision']}, clip {row['grad_clip']}) | "
                         f"{row['value']:.3f} | {_spread(row)} | {_number(row['fit_ms_per_step'])} | "
                         f"{_number(row['hand_ms_per_step'])} |")
        lines.append("")
    scaling = results.get("label_scaling", {})
    if "rows" in scaling:
        memory = scaling["memory"].upper()
        lines += ["### Memory and time with the image count", "",
                  f"| images | label s | label peak tree {memory} MB | train s (one epoch) | "
                  f"train peak tree {memory} MB |",
                  "| --- | --- | --- | --- | --- |"]
        for row in scaling["rows"]:
            lines.append(f"| {row['images']:,} | {_number(row['label_seconds'])} | "
                         f"{_number(row['label_peak_tree_mb'])} | {_number(row['train_seconds'])} | "
                         f"{_number(row['train_peak_tree_mb'])} |")
        lines += ["", f"Bytes per added image: labeling {_number(scaling['label_bytes_per_added_image'])}, "
                  f"training {_number(scaling['train_bytes_per_added_image'])} (target < 1,024).", ""]
    return lines + separate_run_tables(results)


def separate_run_tables(results: Mapping[str, Any]) -> list[str]:
    result = results.get("bf16_vs_fp32")
    if not result:
        return ["### bf16 vs. fp32 accuracy", "", "Not measured yet: `python -m benchmarks.bf16_accuracy`.", ""]
    lines = ["### bf16 vs. fp32 accuracy (a separate run)", "",
             f"`python -m benchmarks.bf16_accuracy`: the demo student's own validation metrics after "
             f"{result.get('steps')} steps in each precision, same seed and pseudo labels. Measured at "
             f"{_stamp(result.get('run', {}))}.", "",
             "| task | metric | fp32 | bf16 | bf16 - fp32 |", "| --- | --- | --- | --- | --- |"]
    for task, metrics in result.get("metrics_fp32", {}).items():
        for metric, value in metrics.items():
            other = result.get("metrics_bf16", {}).get(task, {}).get(metric)
            lines.append(f"| {task} | {metric} | {value:.4f} | {_number(other)} | "
                         f"{_number(None if other is None else other - value)} |")
    return lines + [""]


def markdown(results: Mapping[str, Any], title: str, detail: bool) -> str:
    stamp = results.get("run", {})
    lines = [f"# {title}", "",
             "Generated by `python -m benchmarks.report` from `benchmarks/results.json` (written whole by "
             "`make bench`); do not edit by hand.", "",
             f"Run: {_stamp(stamp)}; {_number(stamp.get('seconds'))} s.", "", *figure_table(results), ""]
    return "\n".join(lines + (detail_tables(results) if detail else []))


def write_reports(results: Mapping[str, Any], summary: Path, page: Path) -> None:
    """``summary`` (the figure table) and ``page`` (the published page with every detail)."""
    if not results.get("run", {}).get("commit") and not results.get("run", {}).get("utc"):
        raise ValueError("results without a run stamp (commit, time): rerun `make bench`")
    summary.write_text(markdown(results, "Benchmark results", detail=False))
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(markdown(results, "Benchmarks", detail=True))


def main() -> None:
    results = json.loads((HERE / "results.json").read_text())
    write_reports(results, HERE / "results.md", HERE.parent / "docs" / "benchmarks.md")


if __name__ == "__main__":
    main()
