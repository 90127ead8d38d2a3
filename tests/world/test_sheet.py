"""The sample sheet: a labelled PNG grid with four panels per image."""

from pathlib import Path

import numpy as np
from PIL import Image

from must.world import SEGMENTATION_CLASSES, sample_sheet
from must.world.sheet import colorize_normals, palette


def test_sample_sheet_writes_a_png_with_a_row_per_domain(tmp_path: Path) -> None:
    one = sample_sheet(tmp_path / "one.png", domains=["objects"], per_domain=1, size=32)
    two = sample_sheet(tmp_path / "two.png", domains=["objects", "transfer"], per_domain=2, size=32)
    small, large = np.asarray(Image.open(one)), np.asarray(Image.open(two))
    assert large.shape[0] > 1.5 * small.shape[0] and large.shape[1] > 1.5 * small.shape[1]
    assert large[..., :3].std() > 20  # pictures, not an empty canvas


def test_palette_and_normal_colours() -> None:
    colors = palette()
    assert colors.shape == (len(SEGMENTATION_CLASSES), 3)
    assert len(np.unique(np.round(colors, 3), axis=0)) == len(SEGMENTATION_CLASSES)
    rgb = colorize_normals(np.array([[[0.0, 0.0, -1.0], [0.0, 0.0, 0.0]]]))
    assert np.allclose(rgb, [[[0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]])
