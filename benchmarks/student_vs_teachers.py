"""One student vs. all teachers (MuST sec. 1: "one model replaces the specialized ones").

Same batch, eval mode, no gradients: the student's single forward pass producing all four task
outputs (classification, detection, segmentation, depth) vs. the four single-head teachers of the
same architecture run one after another. Target: the student costs <= 0.35x the teachers.

Two kinds of figure, side by side:

* **timed**, at the demo's size (narrow ResNet-18-FPN, 64 px), at ResNet-50-FPN 256 px and at
  ViT-B/16 + simple feature pyramid + FPN 256 px (``timm:vit_base_patch16_224`` through
  :mod:`must.models.vit`), each with the ratio its FLOP count predicts for the same models and
  images, so the gap between the implementation and the arithmetic is visible
  (``timed_over_flops``). The ViT costs ~400 GFLOPs per image for the student and its teachers
  together (3x ResNet-50's), so on a 2-core CPU its row times a batch of ``VIT_BATCH`` images over
  ``VIT_REPEATS`` rounds (the ResNets: batch 4 or 8, ``repeats`` rounds);
* **FLOPs** at the paper preset, built from ``must/configs/paper.yaml`` itself (model, image size
  and every head option it sets), with the heads the preset sets and with 128-channel pixel heads.

Teachers run as they are built: a classification teacher reads only C5, so it runs no FPN
(:attr:`must.models.MultiTaskModel.runs_fpn`) and is counted and timed without one.

    python -m benchmarks.student_vs_teachers
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import (TASK_OPTIONS, batches_in_memory, interleave, median, model_config,
                               ratio_summary, timed, trained_like)
from must import config as config_lib
from must.models import ModelConfig, build_model
from must.tasks import build_task
from must.tasks.base import Task

TARGET = 0.35
TIMED_TARGET = 1.15
"""The timed ratio should be within this factor of the ratio its FLOP count predicts."""

TaskOptions = Mapping[str, Mapping[str, Any]]

PAPER_LIKE = ModelConfig(backbone="resnet50", fpn_channels=256)
"""The paper's regime, where the trunk dominates (MuST: ResNet-152-FPN at 640 px); ResNet-50 at
256 px keeps the timed benchmark to a minute on a CPU."""

VIT_B = ModelConfig(backbone="timm:vit_base_patch16_224", fpn_channels=256)
"""ViT-B/16 with ViTDet's simple feature pyramid (:mod:`must.models.vit`) and a 256-channel FPN."""
VIT_BATCH = 2
VIT_REPEATS = 3
"""Smaller than the ResNet rows': one ViT-B round (student + four teachers, batch 2) is ~1.6 TFLOPs,
seconds on a 2-core CPU."""

NARROW_PIXEL_HEADS = {"segmentation": {"hidden_channels": 128}, "depth": {"hidden_channels": 128}}
"""Pixel heads with 128 hidden channels instead of the FPN's 256 (3x fewer FLOPs)."""

PAPER_CLASSES = {"classification": 1000, "detection": 365, "segmentation": 133}
"""Class counts of the paper preset's datasets (ImageNet, Objects365, COCO panoptic): the preset
names the data and the classes come from it, so they are given here."""


def merged(base: TaskOptions, extra: TaskOptions | None) -> dict[str, dict[str, Any]]:
    """Per task, ``base`` options with ``extra`` on top (tasks of ``base`` only)."""
    extra = extra or {}
    return {name: {**options, **extra.get(name, {})} for name, options in base.items()}


def build_pair(config: ModelConfig, teacher_options: TaskOptions,
               student_options: TaskOptions) -> tuple[nn.Module, list[nn.Module]]:
    """The student (one head per task) and one single-head teacher per task, in eval mode. Each
    teacher holds the student's trunk and its task's head weights where the shapes agree, so both
    sides compute the same outputs (random detection weights otherwise change how many boxes reach
    NMS, i.e. the post-processing cost, between the two sides)."""
    torch.manual_seed(0)
    tasks = {name: build_task(name, **options) for name, options in student_options.items()}
    student = trained_like(build_model(config, tasks)).eval()
    state = student.state_dict()
    teachers = []
    for name, options in teacher_options.items():
        teacher = build_model(config, {name: build_task(name, **options)}).eval()
        own = teacher.state_dict()
        teacher.load_state_dict({key: value for key, value in state.items()
                                 if key in own and own[key].shape == value.shape}, strict=False)
        teachers.append(teacher)
    return student, teachers


def _forward_each(models: list[nn.Module], images: torch.Tensor) -> None:
    for model in models:
        model(images)


def _flops(run: Any) -> int:
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


def count_flops(config: ModelConfig, size: int, teacher_options: TaskOptions,
                student_options: TaskOptions | None = None) -> dict[str, Any]:
    """FLOPs (``torch.utils.flop_counter``) of one ``size`` px image through the student and
    through each teacher as they run (a C5-only teacher without its FPN), the student's parts
    (backbone, FPN, each head), and the ratio student / sum of teachers.

    The detection head's count depends on how many RoIs reach its box head (``rois_per_image``): a random
    RPN's box deltas can push every proposal out of a large image, so its regression is zeroed
    (proposals = the top-scoring anchors, as many as a trained RPN keeps)."""
    student, teachers = build_pair(config, teacher_options, student_options or teacher_options)
    rois: list[int] = []
    for model in (student, *teachers):
        for module in model.modules():  # torch's FLOP counter has no entry for fused CPU attention
            if getattr(module, "fused_attn", False):
                module.fused_attn = False
        if "detection" in model.heads:
            with torch.no_grad():
                for parameter in model.heads["detection"].rpn.head.bbox_pred.parameters():
                    parameter.zero_()
            model.heads["detection"].roi_heads.box_head.register_forward_hook(
                lambda module, inputs, output: rois.append(int(inputs[0].shape[0])))
    images = torch.rand(1, 3, size, size)
    with torch.inference_mode():
        student_flops = _flops(lambda: student(images))
        stages = student.backbone((images - student.mean) / student.std)
        backbone = _flops(lambda: student.backbone((images - student.mean) / student.std))
        fpn = _flops(lambda: student.fpn(stages))
        features = student.features(images)
        heads = {name: _flops(lambda name=name: student.heads[name](features)) for name in student.heads}
        teacher_flops = {next(iter(t.heads)): _flops(lambda t=t: t(images)) for t in teachers}
    total = sum(teacher_flops.values())
    n = len(teacher_flops)
    return {"ratio": student_flops / total, "student_gflops": student_flops / 1e9,
            "teachers_gflops": {name: flops / 1e9 for name, flops in teacher_flops.items()},
            "teachers_total_gflops": total / 1e9,
            "backbone_gflops": backbone / 1e9, "fpn_gflops": fpn / 1e9,
            "head_gflops": {name: flops / 1e9 for name, flops in heads.items()},
            "teachers_without_fpn": [t for t, model in zip(teacher_flops, teachers) if not model.runs_fpn],
            # what the ratio would be if every teacher also ran an FPN (the count before
            # C5-only models skipped it)
            "ratio_if_every_teacher_ran_the_fpn": student_flops / (student_flops + (n - 1) * (backbone + fpn)),
            "rois_per_image": rois[0] if rois else 0, "image_size": size,
            "model": config_lib.to_dict(config),
            "teacher_options": {k: dict(v) for k, v in teacher_options.items()},
            "student_options": {k: dict(v) for k, v in (student_options or teacher_options).items()}}


def measure(config: ModelConfig | None = None, batch_size: int = 8, size: int = 64, repeats: int = 7,
            task_options: TaskOptions | None = None, shuffle_seed: int = 0) -> dict[str, Any]:
    """Seconds of the student's forward and of the four teachers' forwards, per round (shuffled
    order), their paired ratios; the FLOP-predicted ratio of the same models at ``size`` px.
    ``task_options`` change heads (e.g. pixel heads' ``hidden_channels``) on both sides."""
    config = config or model_config()
    options = merged(TASK_OPTIONS, task_options)
    model, teachers = build_pair(config, options, options)
    tasks: dict[str, Task] = {name: build_task(name, **o) for name, o in options.items()}
    images = batches_in_memory(tasks, 1, batch_size, size)[0].images
    with torch.inference_mode():
        times = interleave({"student": timed(lambda: model(images)),
                            "teachers": timed(lambda: _forward_each(teachers, images))},
                           repeats, shuffle_seed=shuffle_seed)
        # Where the time goes: the shared trunk (backbone + FPN) once, vs. each head on top of it.
        features = model.features(images)
        trunk = median(interleave({"trunk": timed(lambda: model.features(images))}, repeats)["trunk"])
        heads = {name: median(interleave({name: timed(
            lambda name=name: model.heads[name](features))}, max(1, repeats // 2))[name])
            for name in tasks}
    ratio = ratio_summary(times, "student", "teachers")
    flops = count_flops(config, size, options)
    return {"value": ratio["median"], "target": f"<= {TARGET}", "meets_target": ratio["median"] <= TARGET,
            **{key: ratio[key] for key in ("q1", "q3", "rounds")},
            "flop_predicted_ratio": flops["ratio"], "timed_over_flops": ratio["median"] / flops["ratio"],
            "timed_over_flops_target": f"<= {TIMED_TARGET}",
            "student_ms": 1000 * median(times["student"]), "teachers_ms": 1000 * median(times["teachers"]),
            "seconds": times, "trunk_ms": 1000 * trunk, "head_ms": {name: 1000 * t for name, t in heads.items()},
            "flops": flops, "model": config_lib.to_dict(config), "task_options": options,
            "batch_size": batch_size, "image_size": size, "repeats": repeats}


def paper_preset(extra: TaskOptions | None = None) -> tuple[ModelConfig, int, dict[str, dict[str, Any]],
                                                            dict[str, dict[str, Any]]]:
    """The model, image size, teachers' and student's task options of ``configs/paper.yaml``
    (the student's are the teachers' refined by ``student.tasks``, as ``must train`` builds
    them), each with ``extra`` on top, and the paper datasets' class counts."""
    from must.stages.demo import DemoConfig  # benchmarks may read the pipeline's presets

    preset = config_lib.load(DemoConfig, "paper")
    teachers = {name: {**({"num_classes": PAPER_CLASSES[name]} if name in PAPER_CLASSES else {}),
                       **plan.task_options} for name, plan in preset.teachers.items()}
    student = merged(teachers, preset.student.tasks)
    return preset.model, preset.image_size, merged(teachers, extra), merged(student, extra)


def paper_flops() -> dict[str, Any]:
    """FLOP ratios at the paper preset: its own heads, and 128-channel pixel heads."""
    result = {}
    for name, extra in (("preset_heads", None), ("narrow_pixel_heads", NARROW_PIXEL_HEADS)):
        config, size, teachers, student = paper_preset(extra)
        result[name] = count_flops(config, size, teachers, student)
    return result


def measure_both(batch_size: int = 8, size: int = 64, repeats: int = 7, paper_like: bool = True,
                 paper_scale: bool = True, vit: bool = True) -> dict[str, Any]:
    """``value``: the paper preset's FLOP ratio (the target is set there); ``timed``: the demo's
    narrow ResNet-18 at ``size`` px, ResNet-50-FPN at 256 px (batch 4) with the demo's heads and
    with 128-channel pixel heads, ViT-B/16-FPN at 256 px (``VIT_BATCH``, ``VIT_REPEATS``), each
    beside its FLOP-predicted ratio."""
    timed_rows = {"demo_model": measure(batch_size=batch_size, size=size, repeats=repeats)}
    if paper_like:
        timed_rows["resnet50_256px"] = measure(PAPER_LIKE, batch_size=4, size=256, repeats=repeats)
        timed_rows["resnet50_256px_narrow_pixel_heads"] = measure(
            PAPER_LIKE, batch_size=4, size=256, repeats=repeats, task_options=NARROW_PIXEL_HEADS)
    if vit:
        timed_rows["vit_b16_256px"] = measure(VIT_B, batch_size=VIT_BATCH, size=256,
                                              repeats=min(repeats, VIT_REPEATS))
    result: dict[str, Any] = {"timed": timed_rows}
    if paper_scale:
        flops = paper_flops()
        value = flops["preset_heads"]["ratio"]
        result = {"value": value, "target": f"<= {TARGET} (FLOPs at the paper preset)",
                  "meets_target": value <= TARGET,
                  "narrow_pixel_heads_ratio": flops["narrow_pixel_heads"]["ratio"],
                  "paper_preset_flops": flops, **result}
    else:
        demo = timed_rows["demo_model"]
        result = {"value": demo["value"], "target": demo["target"], "meets_target": demo["meets_target"], **result}
    return result


def main() -> dict[str, Any]:
    result = measure_both()
    print(json.dumps(result, indent=1, default=float))
    return result


if __name__ == "__main__":
    main()
