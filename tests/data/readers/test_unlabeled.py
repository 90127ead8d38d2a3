"""Plain folders of unlabeled images: recursive keys, no targets, bad files named."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from must.data.readers import DataError, DataWarning, UnlabeledFolder


def write_image(path: Path, size: tuple[int, int] = (5, 7)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), 100, np.uint8)).save(path)


def test_recursive_keys_without_targets(tmp_path: Path) -> None:
    write_image(tmp_path / "b.png")
    write_image(tmp_path / "a" / "deep" / "x.jpg", (9, 4))
    write_image(tmp_path / ".cache" / "hidden.png")  # hidden folders are never data
    (tmp_path / ".DS_Store").write_bytes(b"\0\0")
    dataset = UnlabeledFolder(tmp_path)
    assert dataset.keys == ["a/deep/x", "b"]
    assert dataset.tasks == () and dataset.classes == {}
    sample = dataset[0]
    assert sample.targets == {} and sample.image.shape == (3, 9, 4)


def test_non_image_file_is_named(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "labels.csv").write_text("a,1\n")
    with pytest.raises(DataError, match="labels.csv"):
        UnlabeledFolder(tmp_path)
    with pytest.warns(DataWarning, match="labels.csv"):
        dataset = UnlabeledFolder(tmp_path, skip_bad=True)
    assert dataset.keys == ["a"] and len(dataset.skipped) == 1


def test_two_files_with_one_key(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "a.jpg")
    with pytest.raises(DataError, match="a.png") as caught:
        UnlabeledFolder(tmp_path)
    assert "same key 'a'" in str(caught.value)


def test_empty_or_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no image files"):
        UnlabeledFolder(tmp_path)
    with pytest.raises(DataError, match="missing"):
        UnlabeledFolder(tmp_path / "missing")
