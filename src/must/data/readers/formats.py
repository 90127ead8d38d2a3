"""The one entry point: :func:`open_dataset` picks a reader from an explicit dict of formats
(an unknown name fails with the list of valid ones)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from must.config import ConfigError
from must.data.readers.cifar import CifarDataset
from must.data.readers.coco import CocoDetection, image_folders, pick_image_folder
from must.data.readers.coco_segmentation import CocoPanopticSemantic, CocoStuffSemantic
from must.data.readers.config import DatasetConfig
from must.data.readers.dense_maps import DENSE_FOLDERS, DenseFolders
from must.data.readers.errors import DataError
from must.data.readers.fashion_mnist import FashionMNIST
from must.data.readers.image_folder import ImageFolder
from must.data.readers.reader_dataset import ReaderDataset
from must.data.readers.unlabeled import UnlabeledFolder
from must.data.readers.video import TASK as VIDEO_TASK
from must.data.readers.video import VideoClips
from must.data.readers.voc import VOC_TASKS, VocDataset
from must.data.readers.world import WORLD_PATHS, WorldDataset


@dataclass(frozen=True)
class Format:
    open: Callable[[DatasetConfig], ReaderDataset]
    tasks: tuple[str, ...]
    """Every task the format can provide."""


def _annotations(config: DatasetConfig, default: str) -> Path:
    return Path(config.root) / (config.annotations or default)


def _coco(config: DatasetConfig) -> ReaderDataset:
    path = _annotations(config, f"annotations/instances_{config.split}2017.json")
    return CocoDetection(path, image_folders(Path(config.root), config.split, config.images),
                         skip_bad=config.skip_bad, limit=config.limit)


def _coco_panoptic(config: DatasetConfig) -> ReaderDataset:
    path = _annotations(config, f"annotations/panoptic_{config.split}2017.json")
    return CocoPanopticSemantic(path, image_folders(Path(config.root), config.split, config.images),
                                skip_bad=config.skip_bad, limit=config.limit)


def _coco_stuff(config: DatasetConfig) -> ReaderDataset:
    """Masks in ``stuffthingmaps_trainval2017/<split>2017/``; the class list is the union of
    the instances and stuff JSONs' categories (things + stuff), or ``annotations``."""
    root = Path(config.root)
    if config.annotations:
        category_files = [root / config.annotations]
    else:
        candidates = [root / "annotations" / f"{kind}_{config.split}2017.json"
                      for kind in ("instances", "stuff")]
        category_files = [path for path in candidates if path.is_file()]
        if not category_files:
            raise DataError(candidates[-1], "not found: COCO-Stuff needs a JSON with 'categories' "
                                            "(set annotations)")
    masks = root / "stuffthingmaps_trainval2017" / f"{config.split}2017"
    images = pick_image_folder(image_folders(root, config.split, config.images), ())
    return CocoStuffSemantic(images, masks, category_files,
                             skip_bad=config.skip_bad, limit=config.limit)


FORMATS: dict[str, Format] = {
    "imagefolder": Format(lambda c: ImageFolder(c.root, skip_bad=c.skip_bad, limit=c.limit),
                          ("classification",)),
    "cifar10": Format(lambda c: CifarDataset(c.root, "cifar10", c.split, skip_bad=c.skip_bad,
                                             limit=c.limit), ("classification",)),
    "cifar100": Format(lambda c: CifarDataset(c.root, "cifar100", c.split, skip_bad=c.skip_bad,
                                              limit=c.limit), ("classification",)),
    "coco": Format(_coco, ("detection",)),
    "coco_panoptic": Format(_coco_panoptic, ("segmentation",)),
    "coco_stuff": Format(_coco_stuff, ("segmentation",)),
    "voc": Format(lambda c: VocDataset(c.root, c.split, c.tasks, skip_bad=c.skip_bad,
                                       limit=c.limit), tuple(VOC_TASKS)),
    "fashion_mnist": Format(lambda c: FashionMNIST(c.root, c.split, skip_bad=c.skip_bad,
                                                   limit=c.limit), ("classification",)),
    "folder": Format(lambda c: UnlabeledFolder(c.root, skip_bad=c.skip_bad, limit=c.limit), ()),
    "dense": Format(lambda c: DenseFolders(c.root, c.tasks, skip_bad=c.skip_bad, limit=c.limit),
                    tuple(DENSE_FOLDERS)),
    "world": Format(lambda c: WorldDataset(c.root, c.tasks, skip_bad=c.skip_bad, limit=c.limit),
                    tuple(WORLD_PATHS)),
    "video": Format(lambda c: VideoClips(c.root, skip_bad=c.skip_bad, limit=c.limit), (VIDEO_TASK,)),
}


def open_dataset(config: DatasetConfig) -> ReaderDataset:
    """Opens the dataset ``config`` describes; every format returns the same :class:`Sample`."""
    if config.format not in FORMATS:
        raise ConfigError(f"unknown dataset format '{config.format}'; valid formats: "
                          f"{', '.join(FORMATS)}")
    provided = FORMATS[config.format].tasks
    unknown = [task for task in config.tasks if task not in provided]
    if unknown:
        raise ConfigError(f"format '{config.format}' provides "
                          f"{', '.join(provided) or 'no tasks (unlabeled images)'}; not {unknown}")
    return FORMATS[config.format].open(config)


def open_images(config: DatasetConfig, skip_bad: bool, purpose: str) -> ReaderDataset:
    """The images a labeler or predictor runs over: ``skip_bad`` counts and skips unreadable
    ones (either here or in ``config``); an empty set is a :class:`DataError` ("no images to
    ``purpose``")."""
    dataset = open_dataset(dataclasses.replace(config, skip_bad=skip_bad or config.skip_bad))
    if len(dataset) == 0:
        raise DataError(config.root, f"no images to {purpose}")
    return dataset


def open_for_task(config: DatasetConfig, task_name: str) -> ReaderDataset:
    """The dataset ``config`` describes, reading the labels of ``task_name`` only."""
    try:
        return open_dataset(dataclasses.replace(config, tasks=(task_name,)))
    except ConfigError as error:  # say which dataset: a run may name several
        raise ConfigError(f"{config.format} dataset {config.root}: {error}") from None
