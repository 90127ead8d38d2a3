"""The labeler hands freed heap memory back after every shard (glibc's ``malloc_trim``), so a
long labeling run's resident memory does not grow with the shards it has finished."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

from must.data.readers import DatasetConfig
from must.label import LabelConfig, label_dataset
from must.label import labeler


def test_freed_memory_is_released_once_per_finished_shard(world: Path, teachers: dict[str, Path],
                                                          tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(labeler, "release_freed_memory", lambda: calls.append(len(list(
        (tmp_path / "out").glob("shard-*.tar")))))
    data = DatasetConfig("folder", str(world / "images"), limit=20)
    config = LabelConfig(teachers=(str(teachers["depth"]),), data=data, batch_size=8, workers=0,
                         images_per_shard=8)
    label_dataset(config, tmp_path / "out")
    assert calls == [1, 2, 3]  # after each of the 3 shards is published


def test_release_is_malloc_trim_on_glibc_and_a_no_op_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    labeler._malloc_trim.cache_clear()
    try:
        if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
            assert labeler._malloc_trim() is not None
        labeler.release_freed_memory()  # never raises
        labeler._malloc_trim.cache_clear()
        monkeypatch.setattr(labeler.platform, "libc_ver", lambda: ("", ""))  # e.g. musl
        assert labeler._malloc_trim() is None
        labeler.release_freed_memory()
    finally:
        labeler._malloc_trim.cache_clear()
