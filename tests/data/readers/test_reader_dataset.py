"""The reader base: indexing, the open-time summary, load-time replacement under skip_bad."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from must.data.readers import DataError, DataWarning, UnlabeledFolder


def folder(root: Path, names: list[str]) -> Path:
    for name in names:
        Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(root / f"{name}.png")
    return root


def test_indexing(tmp_path: Path) -> None:
    dataset = UnlabeledFolder(folder(tmp_path, ["a", "b"]))
    assert len(dataset) == 2 and dataset[-1].key == "b"
    with pytest.raises(IndexError, match="index 2 out of range for 2 items"):
        dataset[2]
    assert "items=2" in repr(dataset)


def test_nothing_skipped_means_no_warning(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert UnlabeledFolder(folder(tmp_path, ["a"]), skip_bad=True).skipped == []


def test_one_summary_line_when_skipping(tmp_path: Path) -> None:
    folder(tmp_path, ["a"])
    for name in ("x.txt", "y.txt"):
        (tmp_path / name).write_text("?")
    with pytest.warns(DataWarning) as caught:
        dataset = UnlabeledFolder(tmp_path, skip_bad=True)
    assert len(caught) == 1 and len(dataset) == 1
    message = str(caught[0].message)
    assert "skipped 2 bad input(s), kept 1 items" in message and "x.txt" in message
    assert "\n" not in message


def test_load_time_failures_replace_then_give_up(tmp_path: Path) -> None:
    dataset = UnlabeledFolder(folder(tmp_path, ["a", "b"]), skip_bad=True)
    (tmp_path / "a.png").write_bytes(b"gone bad after opening")
    with pytest.warns(DataWarning, match="a.png"):
        assert dataset[0].key == "b"
    assert dataset[0].key == "b"  # known bad: no second attempt, no second record
    assert [Path(path).name for path, _ in dataset.skipped] == ["a.png"]
    (tmp_path / "b.png").write_bytes(b"this one too")
    with pytest.warns(DataWarning), pytest.raises(DataError, match="none of the 2 items"):
        dataset[1]
    strict = UnlabeledFolder(folder(tmp_path, ["a", "b"]))
    (tmp_path / "a.png").write_bytes(b"broken again")
    with pytest.raises(DataError, match="a.png: cannot decode image"):
        strict[0]
