"""FLOPs of every backbone family as the student's trunk: one image through the backbone, the
trunk (backbone + FPN) and the student against its four teachers (``count_flops``), at the demo's
64 px with the demo's heads, and a ViT-B/16 + simple feature pyramid at 256 px beside the
ResNet-50-FPN of ``student_vs_teachers``. Counts, not times: deterministic on any machine.

    python -m benchmarks.backbone_flops          # writes benchmarks/backbone_flops.json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import TASK_OPTIONS, run_stamp
from benchmarks.student_vs_teachers import count_flops
from must.models import ModelConfig, build_backbone

HERE = Path(__file__).resolve().parent
DEMO_SCALE = (("resnet18", 0.25), ("resnet18", 1.0), ("timm:convnext_atto", 1.0),
              ("timm:efficientnet_b0", 1.0), ("timm:regnetx_002", 1.0),
              ("timm:mobilenetv3_small_050", 1.0), ("timm:vit_tiny_patch16_224", 1.0))
"""(backbone, width) at 64 px with the demo's 32-channel FPN; the first is the demo's trunk."""
LARGE = (("resnet50", 256), ("timm:vit_base_patch16_224", 256))
"""(backbone, FPN channels) at 256 px: the architectures users train today."""


def backbone_gflops(name: str, width: float, size: int) -> float:
    backbone = build_backbone(name, width).eval()
    for module in backbone.modules():  # torch's FLOP counter has no entry for fused CPU attention
        if getattr(module, "fused_attn", False):
            module.fused_attn = False
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        backbone(torch.rand(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def row(config: ModelConfig, size: int) -> dict[str, Any]:
    counts = count_flops(config, size, TASK_OPTIONS)
    return {"backbone_gflops": backbone_gflops(config.backbone, config.width, size),
            "trunk_gflops": counts["backbone_gflops"] + counts["fpn_gflops"],
            "student_gflops": counts["student_gflops"], "teachers_total_gflops": counts["teachers_total_gflops"],
            "ratio": counts["ratio"]}


def measure() -> dict[str, Any]:
    demo = {f"{name}@{width}": row(ModelConfig(backbone=name, width=width, fpn_channels=32), 64)
            for name, width in DEMO_SCALE}
    reference = demo["resnet18@0.25"]["backbone_gflops"]
    for entry in demo.values():
        entry["vs_demo_backbone"] = entry["backbone_gflops"] / reference
    large = {name: row(ModelConfig(backbone=name, fpn_channels=channels), 256) for name, channels in LARGE}
    return {"demo_scale_64px": demo, "large_256px": large}


def main() -> None:
    torch.set_num_threads(1)
    result = {**run_stamp(), **measure()}
    (HERE / "backbone_flops.json").write_text(json.dumps(result, indent=2) + "\n")
    for scale in ("demo_scale_64px", "large_256px"):
        for name, entry in result[scale].items():
            print(f"{scale} {name}: backbone {entry['backbone_gflops']:.4f} GFLOPs, "
                  f"student / teachers {entry['ratio']:.3f}")


if __name__ == "__main__":
    main()
