"""``must demo``: the whole pipeline on the embedded procedural world.

Today it generates every domain of the world (train / val / test splits) and writes a sample sheet
of images with their ground truth for every task; the teacher, labeling, student, transfer and
report stages join as they land. Every stage skips work whose outputs already exist, so an
interrupted demo resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from must import config as config_lib
from must.stages.data import WorldDataConfig, generate_world


@dataclass(frozen=True)
class DemoConfig:
    world: WorldDataConfig = field(default_factory=WorldDataConfig)


def run_demo(preset: str, out: Path, overrides: Sequence[str] = ()) -> int:
    from must.world import sample_sheet

    config = config_lib.load(DemoConfig, preset, overrides)
    out.mkdir(parents=True, exist_ok=True)
    config_lib.save(config, out / "config.yaml")
    start = time.perf_counter()
    paths = generate_world(config.world, out / "data")
    sheet = sample_sheet(out / "report" / "world_sample_sheet.png", seed=config.world.seed)
    elapsed = time.perf_counter() - start
    print(f"\nworld: {sum(len(s) for s in paths.values())} splits of {len(paths)} domains under {out / 'data'}")
    print(f"sample sheet (image, class, boxes, segmentation, depth, normals): {sheet}")
    print(f"done in {elapsed:.1f} s")
    return 0
