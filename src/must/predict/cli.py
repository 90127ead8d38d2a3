"""``must predict``: a trained model's predictions for an image set, every task's files at each
image's source size (MuST sec. 3.3: one student replaces all the teachers at inference).

    must predict --model runs/x/student --data folder:photos --out runs/x/predictions --draw
    must predict --model runs/x/student --data coco:/data/coco --out DIR data.split=val \\
                 --tasks detection score_threshold=0.05
    torchrun --nproc_per_node=4 -m must.cli predict ...      # rank r predicts images r, r+4, ...

Overrides are ``key.sub=value`` on :class:`~must.predict.run.PredictConfig` (``batch_size=32``,
``data.skip_bad=true``, ``depth_npy=true``...). Rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from must import config as config_lib
from must import distributed
from must.config import ConfigError
from must.data.readers.config import parse_dataset_spec
from must.predict.run import PredictConfig, predict_dataset

SUMMARY = "predict with a trained model: every task's files at each image's source size"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Run a trained model (student, teacher or transfer cell) over an image set: detections.json "
        "(COCO results), segmentation palette PNGs, 16-bit depth PNGs (mm), normals .npy + PNG, "
        "classification.jsonl, each at the source image's size. Resumable; split over torchrun ranks.")
    parser.add_argument("--model", required=True, type=Path, metavar="DIR",
                        help="a model directory of ours (student, teacher, transfer cell) or its checkpoint.pt")
    parser.add_argument("--data", metavar="FORMAT:ROOT",
                        help="the images, e.g. folder:photos, coco:/data/coco (then data.split=val)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--tasks", metavar="T1,T2", help="a subset of the model's tasks (default: all)")
    parser.add_argument("--draw", action="store_true",
                        help="also draw every task's prediction per image (draw/<key>.png)")
    parser.add_argument("--config", metavar="PRESET",
                        help="YAML file of PredictConfig keys; its 'predict' section is used when it has one")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value",
                        help="PredictConfig overrides, e.g. batch_size=32 score_threshold=0.3")


def build_config(args: argparse.Namespace) -> PredictConfig:
    data: dict = config_lib.read_yaml(args.config) if args.config else {}
    data = data.get("predict", data) or {}
    if args.data:
        data = config_lib.merge(data, {"data": parse_dataset_spec(args.data, "--data")})
    if args.tasks:
        data = {**data, "tasks": [task.strip() for task in args.tasks.split(",") if task.strip()]}
    if args.draw:
        data = {**data, "draw": True}
    data = config_lib.apply_overrides(data, args.overrides)
    if not data.get("data"):
        raise ConfigError("no images: pass --data FORMAT:ROOT")
    return config_lib.from_dict(PredictConfig, data)


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    summary = predict_dataset(args.model, config, args.out)
    if distributed.from_environment().is_main:
        print(f"predictions for {summary.images} images in {args.out} ({summary.written} predicted now, "
              f"{len(summary.skipped)} bad images skipped)"
              + (f"; merged: {', '.join(summary.outputs)}" if summary.outputs else ""))
    return 0
