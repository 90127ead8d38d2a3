"""Fashion-MNIST idx files: tiny ones the test writes, and the real Debian copy when installed."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from must.data.readers import DataError, DatasetConfig, FashionMNIST, open_dataset
from must.data.readers.fashion_mnist import DEFAULT_ROOT


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_split(root: Path, prefix: str, images: np.ndarray, labels: np.ndarray,
                compress: bool) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, data in ((f"{prefix}-images-idx3-ubyte", idx_bytes(images, 0x0803)),
                       (f"{prefix}-labels-idx1-ubyte", idx_bytes(labels, 0x0801))):
        (root / (name + ".gz" if compress else name)).write_bytes(gzip.compress(data) if compress else data)


@pytest.mark.parametrize("compress", [True, False])
def test_tiny_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([9, 0, 3, 3, 1], np.uint8)
    write_split(tmp_path, "t10k", images, labels, compress)
    dataset = open_dataset(DatasetConfig("fashion_mnist", str(tmp_path), split="test"))
    assert len(dataset) == 5 and dataset.keys[4] == "test/00004"
    sample = dataset[3]
    assert sample.image.dtype == torch.uint8 and sample.image.shape == (3, 28, 28)
    for channel in range(3):  # grayscale replicated
        assert torch.equal(sample.image[channel], torch.from_numpy(images[3]))
    assert [int(dataset[i].targets["classification"]) for i in range(5)] == labels.tolist()
    assert dataset.classes["classification"][9] == "Ankle boot"


def test_matches_torchvision_idx_reader(tmp_path: Path) -> None:
    from torchvision.datasets.mnist import read_image_file, read_label_file

    images = np.random.default_rng(1).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_split(tmp_path, "train", images, np.array([1, 2, 3], np.uint8), compress=False)
    ours = FashionMNIST(tmp_path, "train")
    assert torch.equal(ours.images, read_image_file(str(tmp_path / "train-images-idx3-ubyte")))
    assert torch.equal(ours.labels, read_label_file(str(tmp_path / "train-labels-idx1-ubyte")))


@pytest.mark.parametrize("case", ["magic", "truncated", "count", "gzip", "missing", "label"])
def test_bad_idx_files(tmp_path: Path, case: str) -> None:
    images = np.zeros((4, 28, 28), np.uint8)
    labels = np.zeros(4, np.uint8)
    write_split(tmp_path, "train", images, labels, compress=False)
    bad = tmp_path / "train-images-idx3-ubyte"
    if case == "magic":
        bad.write_bytes(idx_bytes(images, 0x0804))
    elif case == "truncated":
        bad.write_bytes(bad.read_bytes()[:-10])
    elif case == "count":
        bad = tmp_path / "train-labels-idx1-ubyte"
        bad.write_bytes(idx_bytes(labels[:3], 0x0801))
    elif case == "gzip":
        bad.unlink()
        bad = tmp_path / "train-images-idx3-ubyte.gz"
        bad.write_bytes(gzip.compress(idx_bytes(images, 0x0803))[:-20])
    elif case == "missing":
        bad.unlink()
    else:
        bad = tmp_path / "train-labels-idx1-ubyte"
        bad.write_bytes(idx_bytes(np.array([0, 1, 10, 2], np.uint8), 0x0801))
    with pytest.raises(DataError, match=bad.name):
        FashionMNIST(tmp_path, "train")


@pytest.mark.skipif(not Path(DEFAULT_ROOT).is_dir(),
                    reason=f"{DEFAULT_ROOT} absent (Debian package dataset-fashion-mnist)")
def test_real_debian_files() -> None:
    train, test = FashionMNIST(), FashionMNIST(split="test")
    assert len(train) + len(test) == 70_000 and len(test) == 10_000
    assert train[0].image.shape == (3, 28, 28) and len(train.classes["classification"]) == 10
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert torch.bincount(train.labels, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(test.labels, minlength=10).tolist() == [1000] * 10
    assert int(train[0].targets["classification"]) == 9  # the first image is an ankle boot
    assert 0 < float(train.images.float().mean()) < 255
