"""Each task maps a prediction on the fitted window back to the source image (``to_source_size``,
which the labeler uses; ``output_at_source_size``, what ``must predict`` returns): boxes per axis
and clipped, dense maps cut to the image's region and resized bilinearly, against a naive crop +
``F.interpolate`` reference on a padded, non-square geometry."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from must.data.geometry import Geometry
from must.tasks import build_task, pretext_builders
from must.tasks import segmentation as segmentation_module

WIDE = Geometry.fit((40, 80), (32, 32))
"""A 40 x 80 image in a 32 x 32 window: resized to 16 x 32, the bottom half padding."""


def reference(window: torch.Tensor, rows: int, cols: int, size: tuple[int, int]) -> torch.Tensor:
    """The naive mapping: the top-left ``rows x cols`` content, bilinearly resized to ``size``."""
    region = window[..., :rows, :cols].float()
    batched = region[None, None] if region.dim() == 2 else region[None]
    shrinking = size[0] < rows or size[1] < cols
    resized = F.interpolate(batched, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return resized[0, 0] if region.dim() == 2 else resized[0]


def test_boxes_are_rescaled_per_axis_and_clipped_to_the_image() -> None:
    task = build_task("detection", num_classes=3)
    assert WIDE.resized_size == (16, 32) and WIDE.output_size == (32, 32)
    prediction = {"boxes": torch.tensor([[4.0, 2.0, 20.0, 10.0], [0.0, 0.0, 32.0, 32.0], [0.0, 10.0, 8.0, 30.0]]),
                  "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([0, 1, 2])}
    mapped = task.to_source_size(prediction, WIDE)
    assert torch.equal(mapped["boxes"], torch.tensor([[10.0, 5.0, 50.0, 25.0], [0.0, 0.0, 80.0, 40.0],
                                                      [0.0, 25.0, 20.0, 40.0]]))  # the last ends in padding
    assert mapped["scores"] is prediction["scores"] and mapped["labels"] is prediction["labels"]
    assert task.output_at_source_size(prediction, WIDE)["boxes"].equal(mapped["boxes"])


def test_no_boxes_stay_no_boxes() -> None:
    prediction = {"boxes": torch.zeros(0), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    assert build_task("detection", num_classes=3).to_source_size(prediction, WIDE)["boxes"].shape == (0, 4)


def test_class_probabilities_are_unchanged() -> None:
    task = build_task("classification", num_classes=4)
    probabilities = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert task.to_source_size(probabilities, WIDE) is probabilities
    assert task.output_at_source_size(probabilities, WIDE) is probabilities


@pytest.mark.parametrize("scale", [1, 2], ids=["window_resolution", "half_resolution"])
def test_dense_maps_lose_the_padding_and_match_a_naive_resize(scale: int) -> None:
    generator = torch.Generator().manual_seed(0)
    side, rows, cols = 32 // scale, 16 // scale, 32 // scale
    probabilities = torch.rand(3, side, side, generator=generator).softmax(dim=0).half()
    depth = torch.rand(side, side, generator=generator)
    normals = F.normalize(torch.randn(3, side, side, generator=generator), dim=0)
    segmentation = build_task("segmentation", num_classes=3)
    expected = reference(probabilities, rows, cols, (40, 80))
    assert torch.equal(segmentation.to_source_size(probabilities, WIDE), expected)
    assert torch.equal(segmentation.output_at_source_size(probabilities, WIDE), expected.argmax(dim=0))
    assert torch.equal(build_task("depth").to_source_size(depth[None], WIDE), reference(depth, rows, cols, (40, 80)))
    mapped = build_task("normals").to_source_size(normals, WIDE)
    assert torch.equal(mapped, F.normalize(reference(normals, rows, cols, (40, 80)), dim=0))
    assert torch.allclose(mapped.norm(dim=0), torch.ones(40, 80), atol=1e-5)


def test_a_map_is_shrunk_with_antialiasing() -> None:
    geometry = Geometry.fit((12, 20), (64, 64))  # 12 x 20 -> 38 x 64 in the window
    depth = torch.rand(64, 64, generator=torch.Generator().manual_seed(1))
    expected = reference(depth, 38, 64, (12, 20))
    assert torch.equal(build_task("depth").to_source_size(depth, geometry), expected)


def test_padding_never_leaks_into_the_image() -> None:
    window = torch.zeros(32, 32)
    window[:16, :32] = 1.0
    depth = build_task("depth")
    assert torch.allclose(depth.to_source_size(window, WIDE), torch.ones(40, 80), atol=1e-6)
    half = depth.to_source_size(window[::2, ::2], WIDE)  # a head at half the input resolution
    assert half.shape == (40, 80) and torch.allclose(half, torch.ones(40, 80), atol=1e-6)


def test_large_segmentation_is_argmaxed_in_strips_with_interpolate_values(monkeypatch: pytest.MonkeyPatch) -> None:
    task = build_task("segmentation", num_classes=5)
    probabilities = torch.rand(5, 32, 32, generator=torch.Generator().manual_seed(0)).softmax(dim=0)
    geometry = Geometry.fit((300, 170), (32, 32))
    region = geometry.unwarp_dense(probabilities)
    whole = F.interpolate(region[None], size=(300, 170), mode="bilinear", align_corners=False)[0]
    rows = segmentation_module.upsampled_rows(region, (300, 170), 37, 120)
    assert torch.allclose(rows, whole[:, 37:120], atol=1e-6)
    expected = task.output_at_source_size(probabilities, geometry)
    monkeypatch.setattr(segmentation_module, "MAX_ELEMENTS", 5 * 170 * 7)  # strips of 7 rows
    in_strips = task.output_at_source_size(probabilities, geometry)
    assert in_strips.shape == (300, 170) and torch.equal(in_strips, expected)


def test_a_pretext_task_has_nothing_to_map_back() -> None:
    task = pretext_builders()["rotation"]()
    with pytest.raises(NotImplementedError, match="'rotation'"):
        task.to_source_size(torch.zeros(4), WIDE)
