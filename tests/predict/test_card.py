"""The model card every teacher and student directory gets (``README.md`` from its record)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from must.predict.card import write_model_card

from .conftest import TASK_OPTIONS


def test_card_from_the_record_and_resolved_config(student: Path, tmp_path: Path) -> None:
    pseudo = tmp_path / "pseudo"
    pseudo.mkdir()
    (pseudo / "manifest.json").write_text(json.dumps({"shards": []}))
    config = {"sources": [{"data": {"format": "folder", "root": "/data/pool"}, "pseudo": [str(pseudo)]}],
              "val": {"depth": {"format": "world", "root": "/data/depth/val", "split": "train"}}}
    (student / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        text = write_model_card(student).read_text()
    finally:
        (student / "config.yaml").unlink()
    manifest_sha = hashlib.sha256((pseudo / "manifest.json").read_bytes()).hexdigest()
    checkpoint_sha = hashlib.sha256((student / "checkpoint.pt").read_bytes()).hexdigest()
    for expected in ("# Multi-task student (MuST sec. 3.3): " + ", ".join(TASK_OPTIONS),
                     "| segmentation | 15: floor, wall, sky,", "input 32 x 32 pixels",
                     "- data: `folder:/data/pool`", manifest_sha, checkpoint_sha,
                     "- validation (depth): `world:/data/depth/val`", "| classification/top1 | 0.1000 |",
                     f"must predict --model {student} --data folder:PHOTOS",
                     f"must export --model {student} --format onnx", f'must.load("{student}")'):
        assert expected in text, expected


def test_must_teach_writes_the_card(world: Path, tmp_path: Path) -> None:
    from must.data.readers import DatasetConfig
    from must.stages.teach import TeachConfig, run_teach
    from must.train.config import TrainConfig

    from .conftest import TINY

    data = DatasetConfig(format="world", root=str(world), tasks=("depth",))
    run_teach(TeachConfig(task="depth", data=data, val=data, model=TINY, image_size=32, eval_batch_size=4,
                          train=TrainConfig(steps=1, batch_size=4, lr=0.01, progress=False)), tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("# Teacher (MuST sec. 3.1): depth")
    assert f"- data: `world:{world}`" in text and "| delta1 |" in text
