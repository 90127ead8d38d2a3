"""``must label``: pseudo-label an image set with teachers (MuST sec. 3.2).

    must label --teacher runs/x/teachers/detection --teacher segmentation=runs/x/teachers/seg \\
               --data folder:/data/unlabeled --out runs/x/pseudo/unlabeled \\
               batch_size=64 thresholds.detection=0.6 top_k=10

    torchrun --nproc_per_node=4 -m must.cli label ...      # rank r labels shards r, r+4, ...

Overrides are ``key.sub=value`` on :class:`~must.label.labeler.LabelConfig` (``data.split=val``,
``data.skip_bad=true``, ``precision=bf16``...). Rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from must import config as config_lib
from must import distributed
from must.config import ConfigError
from must.data.readers.config import parse_dataset_spec
from must.label.labeler import LabelConfig, label_dataset

SUMMARY = "pseudo-label an image set with teachers (sec. 3.2)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run one or more teachers over an image set and write pseudo labels as WebDataset tar "
        "shards with a manifest (MuST sec. 3.2). Resumable: rerun the same command after a crash. "
        "Under torchrun the shards are split across processes.")
    parser.add_argument("--teacher", action="append", default=[], metavar="[TASK=]DIR",
                        help="teacher directory (`must teach` output or one with adapter.json); "
                             "repeat for several teachers; TASK= checks the teacher's task")
    parser.add_argument("--data", metavar="FORMAT:ROOT",
                        help="the image set, e.g. folder:/data/images, world:runs/x/world/pool, "
                             "coco:/data/coco (then data.split=val)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    config_lib.add_config_arguments(parser, LabelConfig, "label", "batch_size=64 thresholds.detection=0.6")


def build_config(args: argparse.Namespace) -> LabelConfig:
    """Preset (its ``label`` section) -> ``--teacher`` / ``--data`` -> overrides, validated."""
    def with_flags(data: dict[str, Any]) -> dict[str, Any]:
        if args.teacher:
            data = {**data, "teachers": list(args.teacher)}
        if args.data:
            data = config_lib.merge(data, {"data": parse_dataset_spec(args.data)})
        resolved = config_lib.apply_overrides(data, args.overrides)  # say what is missing, by flag
        if not resolved.get("teachers"):
            raise ConfigError("no teacher: pass --teacher DIR (repeat for several)")
        if not resolved.get("data"):
            raise ConfigError("no image set: pass --data FORMAT:ROOT")
        return data

    return config_lib.load(LabelConfig, args.config, args.overrides, section="label", flags=with_flags)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    manifest = label_dataset(config, args.out)
    if distributed.from_environment().is_main:
        print(f"pseudo labels in {args.out} (manifest: {manifest})")
    return 0
