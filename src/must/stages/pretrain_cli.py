"""``must pretrain``: the command line of :func:`must.stages.pretrain.run_pretrain`.

    must pretrain --method simclr --data folder:/data/unlabeled --out runs/x/pretrain/simclr
    must pretrain --method multi --data world:runs/demo/data/pool/train --out runs/x/pretrain/multi \\
        schedule=joint lasso=0.001 harmonize=true tasks=[relative_position,colorization,exemplar]
    torchrun --nproc_per_node=4 -m must.cli pretrain ...      # DDP

Overrides are ``key.sub=value`` on :class:`~must.stages.pretrain.PretrainConfig`
(``train.steps=1000``, ``task_options.simclr.temperature=0.2``, ``model.width=0.5``...).
Rerunning the same command resumes from ``--out/checkpoint.pt``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from must import config as config_lib
from must import distributed
from must.data.readers.config import parse_dataset_spec
from must.stages.pretrain import METHODS, PretrainConfig, run_pretrain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Self-supervised pre-training of the ResNet-FPN trunk on unlabeled images: SimCLR, PIRL, "
        "rotation, jigsaw, relative position, colorization, exemplar, or `multi` (Doersch & "
        "Zisserman 2017: several pretext heads, schedule=alternate|joint, lasso=L1 weight, "
        "harmonize=true). Writes checkpoint.pt (load it with `must transfer --init`: backbone + FPN), "
        "pretrain.json, metrics.jsonl, events/ and config.yaml into --out; resumes from "
        "--out/checkpoint.pt.")
    parser.add_argument("--method", required=True, choices=METHODS)
    parser.add_argument("--data", metavar="FORMAT:ROOT",
                        help="the images (labels ignored), e.g. folder:DIR, world:DIR, imagefolder:DIR")
    parser.add_argument("--out", required=True, type=Path, help="output directory, e.g. runs/x/pretrain/simclr")
    parser.add_argument("--config", metavar="PRESET",
                        help="YAML preset (a path or a shipped name); its 'pretrain' section is used "
                             "when it has one")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="PretrainConfig overrides, e.g. train.steps=1000 schedule=joint")


def build_config(args: argparse.Namespace) -> PretrainConfig:
    """Preset (its ``pretrain`` section) -> ``--method`` / ``--data`` -> overrides, validated."""
    data: dict[str, Any] = {}
    if args.config:
        preset = config_lib.read_yaml(args.config)
        data = preset.get("pretrain", preset) or {}
    data = config_lib.merge(data, {"method": args.method})
    if args.data:
        data = config_lib.merge(data, {"data": parse_dataset_spec(args.data)})
    return config_lib.from_dict(PretrainConfig, config_lib.apply_overrides(data, args.overrides))


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    result = run_pretrain(config, args.out)
    if distributed.is_main_process():
        losses = ", ".join(f"{key}={value:.4f}" for key, value in result.losses.items() if key.startswith("loss"))
        print(f"pretrain '{config.method}' -> {result.checkpoint} ({result.step} steps): {losses}")
    return 0
