"""Shared fixtures of the transfer tests: a tiny world transfer domain (train / val / test, 32 px)
and a tiny model config."""

from __future__ import annotations

from pathlib import Path

import pytest

from must.models import ModelConfig
from must.world import generate

TINY_MODEL = ModelConfig(backbone="resnet18", width=0.125, fpn_channels=16)
SPLIT_COUNTS = {"train": 16, "val": 8, "test": 8}


@pytest.fixture(scope="session")
def world_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("transfer_world")
    for seed, (split, count) in enumerate(SPLIT_COUNTS.items()):
        generate("transfer", root / split, count=count, size=32, seed=100 + seed, progress=False)
    return root
