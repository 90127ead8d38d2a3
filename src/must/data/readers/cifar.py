"""CIFAR-10 / CIFAR-100 from the python pickles (MuST sec. 4.3: CIFAR-100 is the downstream
classification task).

Layouts: ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``, ``batches.meta``) and
``cifar-100-python/`` (``train``, ``test``, ``meta``); ``root`` may be that folder or its parent.
Each batch is a pickled dict with ``data`` (``uint8 [N, 3072]``, planes R, G, B of 32x32) and
``labels`` (CIFAR-10) or ``fine_labels`` (CIFAR-100). The pickles are read with an unpickler that
only builds plain containers and NumPy arrays: a data file must not be able to run code.
Keys are ``<split>/<index>`` with a zero-padded index.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from must.data.readers.errors import DataError
from must.data.readers.reader_dataset import ReaderDataset
from must.data.sample import Sample
from must.errors import ConfigError


@dataclass(frozen=True)
class CifarLayout:
    folder: str
    files: dict[str, tuple[str, ...]]
    meta_file: str
    label_field: str
    names_field: str
    num_classes: int


CIFAR_LAYOUTS = {
    "cifar10": CifarLayout("cifar-10-batches-py",
                           {"train": tuple(f"data_batch_{i}" for i in range(1, 6)),
                            "test": ("test_batch",)},
                           "batches.meta", "labels", "label_names", 10),
    "cifar100": CifarLayout("cifar-100-python", {"train": ("train",), "test": ("test",)},
                            "meta", "fine_labels", "fine_label_names", 100),
}

_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"), ("_codecs", "encode"),
}
"""The only callables a CIFAR pickle may name: NumPy's array rebuilders."""


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle as a dict with ``str`` keys (the originals are Python 2 byte strings)."""
    if not path.is_file():
        raise DataError(path, "CIFAR file not found")
    try:
        data = _DataUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as error:  # noqa: BLE001 - pickle raises many types on corrupt input
        raise DataError(path, f"not a readable CIFAR pickle: {error}") from error
    if not isinstance(data, dict):
        raise DataError(path, f"expected a pickled dict, got {type(data).__name__}")
    return {k.decode() if isinstance(k, bytes) else str(k): v for k, v in data.items()}


def _names(meta: dict[str, Any], layout: CifarLayout, path: Path) -> list[str]:
    names = meta.get(layout.names_field)
    if not isinstance(names, list) or len(names) != layout.num_classes:
        raise DataError(path, f"'{layout.names_field}' should list {layout.num_classes} class names")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _batch(path: Path, layout: CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    batch = read_pickle(path)
    data, labels = batch.get("data"), batch.get(layout.label_field)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", None)
        raise DataError(path, f"'data' should be uint8 [N, 3072], got {type(data).__name__} {shape}")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (len(data),):
        raise DataError(path, f"{len(data)} images but {labels.size} '{layout.label_field}'")
    bad = (labels < 0) | (labels >= layout.num_classes)
    if bad.any():
        raise DataError(path, f"label {int(labels[bad][0])} outside 0..{layout.num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


class CifarDataset(ReaderDataset):
    """One split of CIFAR-10 or CIFAR-100, held in memory (180 MB at most)."""

    def __init__(self, root: str | Path, variant: str = "cifar10", split: str = "train", *,
                 limit: int | None = None, skip_bad: bool = False) -> None:
        if variant not in CIFAR_LAYOUTS:
            raise ConfigError(f"unknown CIFAR variant '{variant}'; valid: {', '.join(CIFAR_LAYOUTS)}")
        layout = CIFAR_LAYOUTS[variant]
        if split not in layout.files:
            raise ConfigError(f"unknown {variant} split '{split}'; valid: {', '.join(layout.files)}")
        folder = Path(root)
        if (folder / layout.folder).is_dir():
            folder = folder / layout.folder
        names = _names(read_pickle(folder / layout.meta_file), layout, folder / layout.meta_file)
        super().__init__(f"{variant}:{folder}:{split}", ("classification",),
                         {"classification": names}, skip_bad)
        images, labels = [], []
        for file_name in layout.files[split]:
            try:
                data, targets = _batch(folder / file_name, layout)
            except DataError as error:
                self._reject(error)  # a whole batch file is the unit that can be skipped
                continue
            images.append(data)
            labels.append(targets)
        self.images = torch.from_numpy(np.concatenate(images) if images else
                                       np.zeros((0, 3, 32, 32), np.uint8))[:limit]
        self.labels = torch.from_numpy(np.concatenate(labels) if labels else
                                       np.zeros(0, np.int64))[:limit]
        self.keys = [f"{split}/{i:05d}" for i in range(len(self.labels))]
        self._report_skipped()

    def _load(self, index: int) -> Sample:
        return Sample(self.keys[index], self.images[index].clone(),
                      {"classification": self.labels[index].clone()})
