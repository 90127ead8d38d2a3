"""Noisy Student's photometric RandAugment: pixel values by hand, every operation at every
magnitude equal to torchvision's RandAugment, and the training loader applying it (after the
geometry, from the item's generator) while evaluation images stay untouched."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms.v2 import InterpolationMode, RandAugment

from must.data.geometry import Geometry
from must.data.loader import ResumableBatchSampler, make_eval_loader, make_loader
from must.data.noise import MAX_MAGNITUDE, OPERATIONS, PhotometricRandAugment

from .test_loader import TASKS, ToyDataset

TORCHVISION_NAMES = {"identity": "Identity", "brightness": "Brightness", "color": "Color",
                     "contrast": "Contrast", "sharpness": "Sharpness", "posterize": "Posterize",
                     "solarize": "Solarize", "autocontrast": "AutoContrast", "equalize": "Equalize"}
PIXELS = torch.tensor([0, 10, 100, 119, 128, 200, 255], dtype=torch.uint8)


def _gray(values: torch.Tensor) -> torch.Tensor:
    """A ``uint8 [3, 1, N]`` image whose three channels hold ``values``."""
    return values.expand(3, -1)[:, None].clone()


def _positive(seed: int) -> bool:
    """The sign a signed operation draws first from a generator seeded ``seed``."""
    return bool(torch.rand((), generator=torch.Generator().manual_seed(seed)) < 0.5)


def _seed_with_sign(positive: bool) -> int:
    return next(seed for seed in range(100) if _positive(seed) == positive)


def _apply(name: str, magnitude: int, seed: int = 0) -> list[int]:
    return OPERATIONS[name](_gray(PIXELS), magnitude, torch.Generator().manual_seed(seed))[0, 0].tolist()


def test_operations_give_the_pixel_values_computed_by_hand() -> None:
    # brightness at magnitude 15: factor 1 +- 0.45, products clamped and truncated to uint8
    assert _apply("brightness", 15, _seed_with_sign(True)) == [0, 14, 145, 172, 185, 255, 255]
    assert _apply("brightness", 15, _seed_with_sign(False)) == [0, 5, 55, 65, 70, 110, 140]
    # solarize: pixels >= 255 * (1 - m / 30) inverted (127.5 and 42.5)
    assert _apply("solarize", 15) == [0, 10, 100, 119, 127, 55, 0]
    assert _apply("solarize", 25) == [0, 10, 155, 136, 127, 55, 0]
    # posterize: 8 - round(4 m / 30) bits kept
    assert _apply("posterize", 15) == [0, 8, 100, 116, 128, 200, 252]
    assert _apply("posterize", 30) == [0, 0, 96, 112, 128, 192, 240]
    assert _apply("identity", 30) == PIXELS.tolist()


@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_every_operation_equals_torchvisions_randaugment_at_every_magnitude(name: str) -> None:
    image = torch.randperm(256 * 3, generator=torch.Generator().manual_seed(0)).remainder(256)
    image = image.to(torch.uint8).reshape(3, 16, 16)  # every pixel value, in every channel
    reference = RandAugment(num_magnitude_bins=MAX_MAGNITUDE + 1)
    bins, signed = RandAugment._AUGMENTATION_SPACE[TORCHVISION_NAMES[name]]
    values = bins(MAX_MAGNITUDE + 1, 16, 16)
    for magnitude in range(MAX_MAGNITUDE + 1):
        for positive in (True, False):
            level = 0.0 if values is None else float(values[magnitude])
            level = -level if signed and not positive else level
            expected = reference._apply_image_or_video_transform(
                image, TORCHVISION_NAMES[name], level, interpolation=InterpolationMode.NEAREST, fill={})
            out = OPERATIONS[name](image, magnitude, torch.Generator().manual_seed(_seed_with_sign(positive)))
            assert torch.equal(out, expected), (name, magnitude, positive)


def test_every_operation_keeps_shape_and_dtype() -> None:
    image = torch.randint(0, 256, (3, 24, 20), dtype=torch.uint8)
    for name, operation in OPERATIONS.items():
        out = operation(image, 15, torch.Generator().manual_seed(0))
        assert out.shape == image.shape and out.dtype == torch.uint8, name


def test_noise_is_deterministic_per_seed_and_changes_pixels() -> None:
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    augment = PhotometricRandAugment(num_ops=2, magnitude=20)
    first = augment(image, torch.Generator().manual_seed(5))
    again = augment(image, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    changed = sum(not torch.equal(augment(image, torch.Generator().manual_seed(s)), image) for s in range(20))
    assert changed >= 15


def test_zero_ops_is_identity() -> None:
    image = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    assert torch.equal(PhotometricRandAugment(num_ops=0)(image, torch.Generator()), image)


def test_training_loader_noises_its_images_and_evaluation_does_not() -> None:
    """Each training image is the noise of its geometry's output, drawn from the item's own
    generator after the geometry; the targets are the noise-free run's; evaluation images are
    the dataset's images fitted to the input size, untouched."""
    dataset, noise = ToyDataset(8, seed=3), PhotometricRandAugment(num_ops=2, magnitude=20)
    noisy = make_loader([dataset], TASKS, 4, seed=7, output_size=8, image_noise=noise, rank=0, world_size=1)
    clean = make_loader([dataset], TASKS, 4, seed=7, output_size=8, rank=0, world_size=1)
    sampler = ResumableBatchSampler([len(dataset)], 4, seed=7)
    changed = 0
    for step in range(4):
        noisy_batch, clean_batch = next(noisy), next(clean)
        torch.testing.assert_close(noisy_batch.targets["shade"].value, clean_batch.targets["shade"].value)
        for position, (_, item, seed) in enumerate(sampler.batch(step)):
            generator = torch.Generator().manual_seed(seed)
            image = dataset[item].image
            warped = Geometry.random(tuple(image.shape[-2:]), 8, generator).warp_image(image)
            assert torch.equal(clean_batch.images[position], warped.float() / 255)
            assert torch.equal(noisy_batch.images[position], noise(warped, generator).float() / 255)
            changed += not torch.equal(noisy_batch.images[position], clean_batch.images[position])
    assert changed >= 12, changed  # of 16 (identity, or autocontrast on a full-range image, keep it)
    for batch in make_eval_loader([dataset], TASKS, 4, 8, rank=0, world_size=1):
        for key, image in zip(batch.keys, batch.images):
            source = dataset[int(key.split("/")[1])].image
            fitted = Geometry.fit(tuple(source.shape[-2:]), (8, 8)).warp_image(source)
            assert torch.equal(image, fitted.float() / 255)
