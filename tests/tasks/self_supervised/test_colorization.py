"""Colorization: Lab against scikit-image and back, the lightness input, the ab bins, the
quantized target, decoding and drawing, training."""

import numpy as np
import pytest
import skimage.color
import torch

from must.tasks.self_supervised.colorization import (
    ColorizationTask,
    ab_bins,
    lab_to_rgb,
    lightness_image,
    quantize_ab,
    rgb_to_lab,
)


def as_numpy(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).numpy()


def test_lab_matches_skimage(photos: list[torch.Tensor]) -> None:
    rgb = torch.cat([photos[0], torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)], dim=1).float() / 255
    lab = rgb_to_lab(rgb)
    assert np.abs(as_numpy(lab) - skimage.color.rgb2lab(as_numpy(rgb))).max() < 1e-3
    reference = skimage.color.lab2rgb(skimage.color.rgb2lab(as_numpy(rgb)))
    assert np.abs(as_numpy(lab_to_rgb(lab)) - reference).max() < 1e-4


def test_lab_round_trip() -> None:
    rgb = torch.rand(2, 3, 16, 16)
    assert torch.allclose(lab_to_rgb(rgb_to_lab(rgb)), rgb, atol=1e-5)
    assert rgb_to_lab(torch.ones(3, 1, 1))[:, 0, 0].tolist() == pytest.approx([100, 0, 0], abs=1e-2)


def test_lightness_image(photos: list[torch.Tensor]) -> None:
    gray = lightness_image(photos[1])
    assert gray.dtype == torch.uint8 and torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    lightness = rgb_to_lab(photos[1].float() / 255)[0]
    assert (rgb_to_lab(gray.float() / 255)[0] - lightness).abs().max() < 0.5  # uint8 rounding
    assert torch.equal(lightness_image(gray), gray)  # idempotent
    unit = photos[1].float() / 255
    assert torch.allclose(rgb_to_lab(lightness_image(unit))[0], lightness, atol=1e-3)


def test_bins_cover_the_srgb_gamut() -> None:
    bins = ab_bins(10.0)
    assert 250 <= len(bins) <= 320  # Zhang et al. count 313 in-gamut bins of this grid
    colors = torch.rand(3, 50, 50)
    ab = rgb_to_lab(colors)[1:]
    nearest = bins[quantize_ab(ab, bins)]  # [50, 50, 2]
    # Every sRGB colour has an in-gamut bin centre within half a cell diagonal (5 sqrt 2).
    assert (nearest.permute(2, 0, 1) - ab).norm(dim=0).max() <= 5 * 2**0.5 + 1e-4


def test_quantize_against_brute_force() -> None:
    bins = ab_bins(10.0)
    ab = torch.randn(2, 6, 7) * 40
    labels = quantize_ab(ab, bins)
    for y in range(6):
        for x in range(7):
            distances = [float((ab[:, y, x] - center).norm()) for center in bins]
            assert int(labels[y, x]) == int(np.argmin(distances))


def test_views_and_decoding(photos: list[torch.Tensor], trunk) -> None:
    task = ColorizationTask(view_size=32, hidden_dim=16)
    views = task.make_views(photos[2], torch.Generator())
    assert views["lightness"].shape == (3, 32, 32) and views["bins"].shape == (8, 8)
    assert int(views["bins"].max()) < task.num_outputs
    # A decisive prediction decodes to its bin centre.
    logits = torch.full((8 * 8, task.num_outputs), -30.0)
    logits[:, 5] = 30.0
    (ab,) = task.predict({"logits": logits, "labels": torch.zeros(64), "shape": torch.tensor([1, 8, 8])})
    assert ab.shape == (2, 8, 8)
    assert torch.allclose(ab[:, 3, 3], task.bins[5], atol=1e-4)
    drawn = task.draw(as_numpy(photos[2]), ab)
    assert drawn.shape == (64, 64, 3) and drawn.dtype == np.uint8


def test_trains(photos, trunk, batch_of, train) -> None:
    task = ColorizationTask(view_size=32, hidden_dim=16)
    curve = train(task, trunk, batch_of(task, photos), steps=40, lr=1e-2)
    assert curve.ratio < 0.7, curve
