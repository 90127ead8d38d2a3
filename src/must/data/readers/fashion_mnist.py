"""Fashion-MNIST from its idx files: our real downstream classification set (MuST sec. 4.3
transfer; Debian's ``dataset-fashion-mnist`` installs it under ``/usr/share/datasets``).

Files: ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` and ``t10k-*`` for the test
split, gzipped or not. idx format: big-endian magic (``0x0803`` images, ``0x0801`` labels), then
one big-endian ``uint32`` per dimension, then ``uint8`` data. The 28x28 grayscale images are
replicated to 3 channels so every reader hands the model RGB. Keys are ``<split>/<index>``.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from must.data.readers.errors import DataError
from must.data.readers.reader_dataset import ReaderDataset
from must.data.sample import Sample
from must.errors import ConfigError

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
SPLIT_PREFIX = {"train": "train", "test": "t10k"}
IMAGES_MAGIC = 0x0803
LABELS_MAGIC = 0x0801


def _find(root: Path, name: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    raise DataError(root / name, "idx file not found (looked for it with and without .gz)")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx file as a ``uint8`` array of the shape its header declares."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(path, f"broken gzip stream: {error}") from error
    if len(raw) < 4:
        raise DataError(path, "too short for an idx header")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise DataError(path, f"idx magic number {found:#06x}, expected {magic:#06x}")
    dims = magic & 0xFF
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(path, "truncated idx header")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise DataError(path, f"header declares shape {list(shape)} ({expected} bytes) but "
                              f"{len(raw) - header} data bytes follow")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


class FashionMNIST(ReaderDataset):
    """One split of Fashion-MNIST held in memory: ``uint8 [3, 28, 28]`` images, labels 0..9."""

    def __init__(self, root: str | Path = DEFAULT_ROOT, split: str = "train", *,
                 limit: int | None = None, skip_bad: bool = False) -> None:
        if split not in SPLIT_PREFIX:
            raise ConfigError(f"unknown Fashion-MNIST split '{split}'; valid: {', '.join(SPLIT_PREFIX)}")
        root = Path(root)
        super().__init__(f"fashion_mnist:{root}:{split}", ("classification",),
                         {"classification": list(FASHION_MNIST_CLASSES)}, skip_bad)
        prefix = SPLIT_PREFIX[split]
        images_path = _find(root, f"{prefix}-images-idx3-ubyte")
        labels_path = _find(root, f"{prefix}-labels-idx1-ubyte")
        images = read_idx(images_path, IMAGES_MAGIC)
        labels = read_idx(labels_path, LABELS_MAGIC)
        if len(images) != len(labels):
            raise DataError(labels_path, f"{len(labels)} labels for {len(images)} images in "
                                         f"{images_path.name}")
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(labels_path, f"label {int(labels.max())} outside 0..9")
        # A file is the unit here (no per-image files), so there is nothing to skip: bad files
        # always raise.
        self.images = torch.from_numpy(images[:limit].copy())
        self.labels = torch.from_numpy(labels[:limit].astype(np.int64))
        self.keys = [f"{split}/{i:05d}" for i in range(len(self.labels))]

    def _load(self, index: int) -> Sample:
        image = self.images[index].unsqueeze(0).expand(3, -1, -1).contiguous()
        return Sample(self.keys[index], image, {"classification": self.labels[index].clone()})
