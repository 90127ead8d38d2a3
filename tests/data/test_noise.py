import torch

from must.data.noise import OPERATIONS, PhotometricRandAugment


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
