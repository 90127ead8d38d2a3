"""Every domain of the procedural world, split into train / val / test, as the pipeline reads it.

Each split is generated with its own seed (derived from the world seed and the split name), so
splits never share images, and each is an ordinary dataset directory that the readers open
(``format: world``)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

from must.world.clips import generate_clips
from must.world.video import VIDEO_DOMAINS
from must.world.writer import generate


@dataclass(frozen=True)
class WorldDataConfig:
    size: int = 64
    """Image side in pixels."""
    seed: int = 0
    workers: int = 1
    splits: dict[str, dict[str, int]] = field(default_factory=lambda: {
        "objects": {"train": 2000, "val": 400},
        "clutter": {"train": 2000, "val": 400},
        "scenes": {"train": 2000, "val": 400},
        "depth": {"train": 2000, "val": 400},
        "pool": {"train": 4000},
        "transfer": {"train": 1000, "val": 300, "test": 300},
    })
    """domain -> split -> image count (clip count for a video domain, e.g. ``video``)."""


def split_seed(seed: int, domain: str, split: str) -> int:
    """A stable per-split seed (crc32: Python's ``hash`` is salted per process)."""
    return (seed * 1_000_003 + zlib.crc32(f"{domain}/{split}".encode())) % (2**31)


def generate_world(config: WorldDataConfig, root: Path) -> dict[str, dict[str, Path]]:
    """Generates (or completes) every split; returns domain -> split -> directory."""
    paths: dict[str, dict[str, Path]] = {}
    for domain, splits in config.splits.items():
        for split, count in splits.items():
            out = root / domain / split
            write = generate_clips if domain in VIDEO_DOMAINS else generate
            write(domain, out, count=count, size=config.size,
                  seed=split_seed(config.seed, domain, split), workers=config.workers)
            paths.setdefault(domain, {})[split] = out
    return paths
