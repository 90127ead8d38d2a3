"""The composer: joining sources by key, orphans, required targets, worker pickling."""

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from must.data.readers import ComposedDataset, DataError, DataWarning, ImageEntry, LabelSource


def entries(root: Path, names: list[str]) -> list[ImageEntry]:
    result = []
    for name in names:
        Image.fromarray(np.zeros((3, 4, 3), np.uint8)).save(root / f"{name}.png")
        result.append(ImageEntry(name, root / f"{name}.png"))
    return result


def test_join_by_key_leaves_absent_targets_absent(tmp_path: Path) -> None:
    labels = LabelSource({"b": 1}, ["x", "y"], tmp_path / "labels.txt")
    dataset = ComposedDataset("t", entries(tmp_path, ["a", "b"]), [labels])
    assert dataset.keys == ["a", "b"]
    assert dataset[0].targets == {}
    assert int(dataset[1].targets["classification"]) == 1
    assert ComposedDataset("t", entries(tmp_path, ["a", "b"]), [labels], require_target=True).keys == ["b"]


def test_target_without_image_is_an_error(tmp_path: Path) -> None:
    labels = LabelSource({"a": 0, "ghost": 1}, ["x", "y"], tmp_path / "labels.txt")
    with pytest.raises(DataError, match="labels.txt.*'ghost'"):
        ComposedDataset("t", entries(tmp_path, ["a"]), [labels])
    with pytest.warns(DataWarning):
        dataset = ComposedDataset("t", entries(tmp_path, ["a"]), [labels], skip_bad=True)
    assert dataset.keys == ["a"] and len(dataset.skipped) == 1


def test_two_sources_for_one_task_are_refused(tmp_path: Path) -> None:
    labels = LabelSource({}, ["x"], tmp_path)
    with pytest.raises(ValueError, match="two sources"):
        ComposedDataset("t", [], [labels, labels])


def test_dataset_and_errors_survive_pickling(tmp_path: Path) -> None:
    """DataLoader workers receive the dataset, and send DataErrors back, by pickling."""
    labels = LabelSource({"a": 0}, ["x"], tmp_path / "labels.txt")
    dataset = pickle.loads(pickle.dumps(ComposedDataset("t", entries(tmp_path, ["a"]), [labels])))
    assert dataset[0].key == "a"
    error = pickle.loads(pickle.dumps(DataError(tmp_path / "f.png", "broken")))
    assert error.path == str(tmp_path / "f.png") and error.problem == "broken"
