"""Joins images with annotation sources by key: the composer behind every file-based reader.

An image list (:class:`ImageEntry`) and one :class:`TargetSource` per task (labels from folder
names, COCO boxes, VOC XML, mask / depth / normal maps, ...) make a dataset whose samples carry
the targets their key has in each source and nothing for the others (MuST sec. 3.4: an image may
lack a task's label). Cheap consistency checks (files exist, annotations agree with the image
header's size) run at open time; decoding runs at load time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from must.data.readers.errors import DataError
from must.data.readers.files import load_image, probe_image
from must.data.readers.reader_dataset import ReaderDataset
from must.data.sample import Sample


@dataclass(frozen=True)
class ImageEntry:
    key: str
    path: Path
    named_in: str | None = None
    """The annotation or list file that names this image, quoted when the image is missing."""


class TargetSource(ABC):
    """The targets of one task, looked up by image key."""

    task: str
    classes: list[str] | None = None

    @abstractmethod
    def keys(self) -> Set[str]:
        """Keys that have a target in this source."""

    @abstractmethod
    def describe(self, key: str) -> str:
        """The file holding ``key``'s target (for error messages)."""

    @abstractmethod
    def load(self, key: str, image_size: tuple[int, int]) -> Any:
        """The target of ``key`` in the :mod:`must.data.sample` convention of ``task``."""

    def check(self, key: str, image_size: tuple[int, int]) -> None:
        """Open-time check of ``key``'s target against its image's (height, width)."""

    def problems(self) -> list[DataError]:
        """Problems found while parsing that belong to no image of the list."""
        return []


class LabelSource(TargetSource):
    """Class labels known at open time (folder names, a list file)."""

    def __init__(self, labels: dict[str, int], classes: list[str], origin: Path,
                 task: str = "classification") -> None:
        self.task = task
        self.classes = classes
        self.labels = labels
        self.origin = origin

    def keys(self) -> Set[str]:
        return self.labels.keys()

    def describe(self, key: str) -> str:
        return f"{self.origin} (label of {key})"

    def load(self, key: str, image_size: tuple[int, int]) -> Any:
        return torch.tensor(self.labels[key], dtype=torch.int64)


class ComposedDataset(ReaderDataset):
    """Images joined with target sources by key.

    ``require_target`` drops images that have no target in any source (a segmentation set
    keeps only annotated images); otherwise they stay, with no targets. ``limit`` keeps the
    first N good images in list order. ``problems`` are errors the caller found while listing the
    images (a non-image file in an image folder): raised, or recorded with ``skip_bad``.
    """

    def __init__(self, name: str, entries: Sequence[ImageEntry], sources: Sequence[TargetSource],
                 *, skip_bad: bool = False, limit: int | None = None,
                 require_target: bool = False, problems: Sequence[DataError] = ()) -> None:
        tasks = tuple(source.task for source in sources)
        if len(set(tasks)) != len(tasks):
            raise ValueError(f"{name}: two sources for one task: {tasks}")
        classes = {s.task: list(s.classes) for s in sources if s.classes is not None}
        super().__init__(name, tasks, classes, skip_bad)
        self.sources = list(sources)
        self._entries: list[ImageEntry] = []
        for problem in problems:
            self._reject(problem)
        self._open(entries, limit, require_target)
        self._report_skipped()

    def _open(self, entries: Sequence[ImageEntry], limit: int | None, require_target: bool) -> None:
        for source in self.sources:
            for problem in source.problems():
                self._reject(problem)
        unique = self._unique(entries)
        self._reject_orphans({entry.key for entry in unique})
        for entry in unique:
            if limit is not None and len(self._entries) >= limit:
                break
            present = [source for source in self.sources if entry.key in source.keys()]
            if require_target and not present:
                continue
            try:
                size = probe_image(entry.path, entry.named_in)
                for source in present:
                    source.check(entry.key, size)
            except DataError as error:
                self._reject(error)
                continue
            self._entries.append(entry)
            self.keys.append(entry.key)

    def _unique(self, entries: Sequence[ImageEntry]) -> list[ImageEntry]:
        first: dict[str, ImageEntry] = {}
        unique = []
        for entry in entries:
            if entry.key in first:
                self._reject(DataError(entry.path, f"has the same key '{entry.key}' as "
                                                   f"{first[entry.key].path}"))
                continue
            first[entry.key] = entry
            unique.append(entry)
        return unique

    def _reject_orphans(self, known: Set[str]) -> None:
        """A target whose image is missing is an inconsistency, not a silent drop."""
        for source in self.sources:
            for key in sorted(source.keys() - known):
                self._reject(DataError(source.describe(key),
                                       f"{source.task} target has no image with key '{key}'"))

    def _load(self, index: int) -> Sample:
        entry = self._entries[index]
        image = load_image(entry.path)
        size = (int(image.shape[-2]), int(image.shape[-1]))
        targets = {source.task: source.load(entry.key, size)
                   for source in self.sources if entry.key in source.keys()}
        return Sample(entry.key, image, targets)

    def path_of(self, index: int) -> Path:
        """The image file of item ``index``."""
        return self._entries[index].path
