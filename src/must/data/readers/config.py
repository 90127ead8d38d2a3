"""The config of one dataset: which format, where, which split and tasks.

Built from YAML with :func:`must.config.from_dict`, e.g.::

    format: coco
    root: /data/coco
    split: val
    skip_bad: true
"""

from __future__ import annotations

from dataclasses import dataclass

from must.errors import ConfigError


@dataclass(frozen=True)
class DatasetConfig:
    """Where a dataset lives and how to read it; opened by :func:`must.data.readers.open_dataset`.

    ``root`` per format:

    * ``imagefolder``: the folder of class folders; ``folder``: the folder of images;
    * ``cifar10`` / ``cifar100``: ``cifar-10-batches-py`` / ``cifar-100-python`` or its parent;
    * ``coco``, ``coco_panoptic``, ``coco_stuff``: the COCO root, with JSONs in ``annotations/``
      and images in ``images`` if given, else the first of ``<split>2017/``, ``images/`` (CVAT's
      COCO export) and ``root`` itself that holds them;
    * ``voc``: a ``VOC2007`` / ``VOC2012`` folder; ``fashion_mnist``: the idx files' folder;
    * ``dense``: a folder with ``images/`` and ``depth/`` and / or ``normals/``;
    * ``world``: one generated world directory (with ``world.json``);
    * ``video``: a folder of clip folders, frames with their motion masks (``must world video``).
    """

    format: str
    root: str
    split: str = "train"
    """Named split (cifar, coco, voc, fashion_mnist); folder formats are one split per root."""
    tasks: tuple[str, ...] = ()
    """Tasks to load; empty = every task the source has."""
    annotations: str | None = None
    """The annotation JSON (COCO formats) instead of the default; relative to ``root``."""
    images: str | None = None
    """The image folder (COCO formats), relative to ``root``; None = ``<split>2017/``, else
    ``images/``, else ``root`` itself, whichever holds the images."""
    skip_bad: bool = False
    """Skip bad inputs (counted in ``dataset.skipped``) instead of stopping with a DataError."""
    limit: int | None = None
    """Keep only the first N items."""

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"limit must be >= 0, got {self.limit}")
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError(f"tasks listed twice: {list(self.tasks)}")


def parse_dataset_spec(value: str, flag: str = "--data") -> dict[str, str]:
    """A command line's ``FORMAT:ROOT`` -> ``{"format": FORMAT, "root": ROOT}`` (a config mapping)."""
    fmt, separator, root = str(value).partition(":")
    if not separator or not fmt or not root:
        raise ConfigError(f"{flag} '{value}' is not of the form FORMAT:ROOT "
                          "(e.g. folder:/data/images, world:runs/demo/data/objects/train)")
    return {"format": fmt, "root": root}
