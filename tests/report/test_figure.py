"""Figure 4: one student forward pass, one row per image, the documented pixel size."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from must.report.figure import (figure4, figure_size, find_figure_images, images_from_folder,
                                scaled_boxes, square)
from must.report.student import load_student, load_transfer_model


@pytest.fixture(scope="module")
def student(run_dir: Path) -> Any:
    return load_student(run_dir / "student")


def test_figure_with_normals_column(run_dir: Path, tmp_path: Path, student: Any) -> None:
    images, notes = find_figure_images(run_dir, 2, student.image_size)
    assert notes == [] and [(image.source, image.key) for image in images] == [
        ("pool", "img-000"), ("pool", "img-001"), ("transfer", "img-000"), ("transfer", "img-001")]
    normals = load_transfer_model(run_dir / "transfer" / "must" / "normals", "normals")
    calls = []
    hook = student.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        result = figure4(student, images, tmp_path / "figure4.png", normals_model=normals, panel=64)
    finally:
        hook.remove()
    assert len(calls) == 1  # every student panel comes from a single forward pass
    assert result.columns == ["class", "boxes", "segmentation", "depth", "normals*"]
    # 120 px labels + 5 columns of (64 + 4) + 4; 28 px header + 4 rows of (64 + 4) + 4
    assert result.size == (464, 304)
    picture = np.asarray(Image.open(result.path).convert("RGB"))
    assert picture.shape == (304, 464, 3)
    for column in range(5):  # every panel is drawn, none left blank white
        left = 120 + 4 + column * 68
        panel = picture[32:96, left:left + 64]
        assert (panel != 255).any(axis=-1).mean() > 0.5, column


def test_without_normals_and_with_world_images(tmp_path: Path, student: Any) -> None:
    images, notes = find_figure_images(tmp_path, 1, student.image_size)  # no data/: rendered world
    assert [image.source for image in images] == ["pool", "transfer"] and len(notes) == 2
    assert images[0].image.shape == (student.image_size, student.image_size, 3)
    result = figure4(student, images, tmp_path / "f.png", panel=48)
    assert result.columns == ["class", "boxes", "segmentation", "depth"]
    assert result.size == figure_size(2, 4, 48) == (120 + 4 * 52 + 4, 28 + 2 * 52 + 4)


def test_image_helpers(tmp_path: Path, files: Any) -> None:
    files.write_images(tmp_path, 3, seed=0)
    found = images_from_folder("mine", tmp_path, 2)
    assert [item.key for item in found] == ["img-000", "img-001"] and found[0].image.shape == (40, 48, 3)
    assert square(found[0].image, 32).shape == (32, 32, 3)
    boxes = scaled_boxes({"boxes": torch.tensor([[1.0, 2.0, 3.0, 4.0]]), "labels": torch.tensor([2])}, 3.0)
    assert boxes["boxes"].tolist() == [[3.0, 6.0, 9.0, 12.0]] and boxes["labels"].tolist() == [2]
    with pytest.raises(ValueError, match="at least one image"):
        figure4(None, [], tmp_path / "x.png")  # type: ignore[arg-type]
