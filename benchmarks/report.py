"""``results.md``: one row per figure (value, target, what it means, how it was measured)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ROWS: dict[str, tuple[str, str]] = {
    # key: (what it means, how measured)
    "student_vs_teachers": ("student forward time / four teachers' forwards (SPEC B2)",
                            "eval, same batch and weights, interleaved, median of paired ratios"),
    "predict_vs_teachers": ("`must predict` time, student / four teachers one after another",
                            "end to end (decode, fit, forward, map back, write every file), same "
                            "images and weights, fresh outputs each round; images/s of both in JSON"),
    "label_efficiency": ("`label_dataset` images/s at scale / bare teachers' forward images/s",
                         "end to end (decode, infer, threshold, encode, write) vs preloaded tensors; "
                         "time(all) - time(first half), so start-up cancels; whole-run ratio and "
                         "start-up seconds in JSON"),
    "engine_efficiency": ("hand loop step time / `fit` step time",
                          "same model, in-memory batches, fp32; step = interval between batch requests"),
    "bf16_speedup_train": ("fp32 step time / bf16 autocast step time (CPU)",
                           "both through `fit`; metrics after the same short schedule in the row's JSON"),
    "mfu_train": ("achieved FLOP/s of a train step / measured fp32 matmul peak",
                  "FlopCounterMode FLOPs; peak = torch.mm 1024^2 interleaved; per backbone in JSON"),
    "world_img_per_s_64": ("world images/s at 64x64, 2 processes", "render_image in a spawn pool"),
    "world_img_per_s_128": ("world images/s at 128x128, 2 processes", "render_image in a spawn pool"),
    "loader_vs_step": ("loader images/s / training step images/s (> 1: loader keeps up)",
                       "make_loader over a world set (in-process) vs the student's step, interleaved"),
    "label_scaling": ("time per image and peak RSS at 4x / 1x images (1 = linear, flat)",
                      "label + one training epoch in fresh subprocesses, peak RSS (VmHWM)"),
    "ddp_speedup": ("step time 1 process / 2 processes, same global batch",
                    "torchrun gloo, cores split evenly (2x1 thread vs 1x2 threads)"),
}


def _value(result: Any) -> str:
    if isinstance(result, list):  # label_scaling rows + summary
        summary = next((row["summary"] for row in result if "summary" in row), {})
        return ("label {label_time_per_image_ratio:.2f} / {label_peak_rss_ratio:.2f}, "
                "train {train_time_per_image_ratio:.2f} / {train_peak_rss_ratio:.2f}").format(**summary)
    value = result.get("value")
    return f"{value:.3g}" if isinstance(value, (int, float)) else str(value)


def _target(result: Any) -> str:
    if isinstance(result, list):
        return "~1 / ~1"
    return str(result.get("target", ""))


def write_markdown(results: dict[str, Any], path: Path) -> None:
    machine = results.get("machine", {})
    lines = ["# Benchmark results", "",
             f"Machine: {machine.get('cpu')}, {machine.get('cores')} cores, torch {machine.get('torch')}, "
             f"{machine.get('torch_threads')} threads, load {machine.get('load_average_1min')}"
             f"{' (quick sizes)' if machine.get('quick') else ''}. Details: `results.json`.", "",
             "| figure | value | target | what it means | how measured |", "| --- | --- | --- | --- | --- |"]
    for key, (meaning, how) in ROWS.items():
        if key in results:
            lines.append(f"| `{key}` | {_value(results[key])} | {_target(results[key])} | {meaning} | {how} |")
    path.write_text("\n".join(lines) + "\n")
