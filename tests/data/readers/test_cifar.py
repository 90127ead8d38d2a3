"""CIFAR pickles written by the test in the exact layout of the official archives."""

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from must.data.readers import CifarDataset, DataError, DataWarning, DatasetConfig, open_dataset


def write_pickle(path: Path, content: object) -> None:
    # Protocol 2 and byte-string keys, like the Python 2 pickles of the official archives.
    path.write_bytes(pickle.dumps(content, protocol=2))


def write_cifar10(root: Path, per_batch: int = 3) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    write_pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)],
                                           b"num_vis": 3072})
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        write_pickle(folder / name, {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)],
        })
    return folder


def test_cifar10_round_trip(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    train = CifarDataset(tmp_path, "cifar10", "train")  # the parent folder works too
    assert len(train) == 15 and train.keys[0] == "train/00000"
    assert train.classes["classification"] == [f"c{i}" for i in range(10)]
    batch = pickle.loads((folder / "data_batch_2").read_bytes(), encoding="bytes")
    sample = train[4]  # second image of data_batch_2
    row = batch[b"data"][1]
    assert sample.image.dtype == torch.uint8 and sample.image.shape == (3, 32, 32)
    # Planes R, G, B of 1024 values each, row-major.
    assert int(sample.image[1, 2, 5]) == int(row[1024 + 2 * 32 + 5])
    assert int(sample.targets["classification"]) == batch[b"labels"][1]
    test = open_dataset(DatasetConfig("cifar10", str(folder), split="test", limit=2))
    assert len(test) == 2 and test.keys == ["test/00000", "test/00001"]


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    write_pickle(folder / "meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
                                   b"coarse_label_names": [f"k{i}".encode() for i in range(20)]})
    data = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    for name in ("train", "test"):
        write_pickle(folder / name, {b"fine_labels": [99, 7], b"coarse_labels": [19, 1],
                                     b"data": data})
    dataset = open_dataset(DatasetConfig("cifar100", str(folder), split="test"))
    assert [int(dataset[i].targets["classification"]) for i in range(2)] == [99, 7]
    assert dataset.classes["classification"][99] == "f99"
    assert torch.equal(dataset[1].image.flatten(), torch.from_numpy(data[1]))


class _Exploit:
    def __reduce__(self) -> tuple:
        return os.system, ("echo pwned",)


@pytest.mark.parametrize("case", ["missing", "garbage", "shape", "label", "code"])
def test_bad_batch_files(tmp_path: Path, case: str) -> None:
    folder = write_cifar10(tmp_path)
    bad = folder / "data_batch_3"
    if case == "missing":
        bad.unlink()
    elif case == "garbage":
        bad.write_bytes(b"\x80\x02 definitely not a pickle")
    elif case == "shape":
        write_pickle(bad, {b"labels": [0], b"data": np.zeros((1, 100), np.uint8)})
    elif case == "label":
        write_pickle(bad, {b"labels": [10], b"data": np.zeros((1, 3072), np.uint8)})
    else:
        write_pickle(bad, {b"labels": [0], b"data": _Exploit()})
    with pytest.raises(DataError, match="data_batch_3") as caught:
        CifarDataset(folder, "cifar10", "train")
    if case == "code":
        assert "refusing to load" in str(caught.value)
    with pytest.warns(DataWarning, match="skipped 1"):
        dataset = CifarDataset(folder, "cifar10", "train", skip_bad=True)
    assert len(dataset) == 12 and dataset.skipped[0][0] == str(bad)


def test_unknown_split_lists_valid_ones(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    with pytest.raises(ValueError, match="train, test"):
        CifarDataset(tmp_path, "cifar10", "val")


def test_numpy_1_module_path_of_the_official_files(tmp_path: Path) -> None:
    """The official pickles name ``numpy.core.multiarray`` (NumPy 1); NumPy 2 writes ``_core``."""
    folder = write_cifar10(tmp_path, per_batch=1)
    path = folder / "test_batch"
    path.write_bytes(path.read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert b"numpy.core.multiarray" in path.read_bytes()
    assert len(CifarDataset(folder, "cifar10", "test")) == 1
