"""The entry point: one explicit dict of formats, config validation, loud failures."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from must.config import ConfigError, from_dict
from must.data.readers import FORMATS, DatasetConfig, ReaderDataset, open_dataset
from must.data.sample import Sample


def test_the_formats_of_the_spec() -> None:
    assert set(FORMATS) == {"imagefolder", "cifar10", "cifar100", "coco", "coco_panoptic",
                            "coco_stuff", "voc", "fashion_mnist", "folder", "dense", "world", "video"}


def test_unknown_format_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown dataset format 'imagenet'.*imagefolder, cifar10"):
        open_dataset(DatasetConfig("imagenet", "/nowhere"))


def test_task_a_format_cannot_provide(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'coco' provides detection; not \\['depth'\\]"):
        open_dataset(DatasetConfig("coco", str(tmp_path), tasks=("depth",)))
    with pytest.raises(ConfigError, match="no tasks"):
        open_dataset(DatasetConfig("folder", str(tmp_path), tasks=("classification",)))


def test_config_from_data() -> None:
    config = from_dict(DatasetConfig, {"format": "voc", "root": "/data/VOC2012", "split": "val",
                                       "tasks": ["segmentation"], "limit": 10})
    assert config.tasks == ("segmentation",) and config.limit == 10 and not config.skip_bad
    with pytest.raises(ConfigError, match="unknown config key 'path'.*valid keys: annotations"):
        from_dict(DatasetConfig, {"format": "voc", "path": "/data"})
    with pytest.raises(ConfigError, match="limit must be >= 0"):
        from_dict(DatasetConfig, {"format": "voc", "root": "/data", "limit": -1})


def test_folder_formats_return_samples(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(tmp_path / "a" / "x.png")
    for name in ("imagefolder", "folder"):
        dataset = open_dataset(DatasetConfig(name, str(tmp_path)))
        assert isinstance(dataset, ReaderDataset) and isinstance(dataset[0], Sample)
        assert dataset.keys == ["a/x"]
