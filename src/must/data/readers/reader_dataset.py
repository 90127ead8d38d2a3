"""The base of every reader: a map-style dataset of :class:`~must.data.sample.Sample` with
``keys``, ``classes`` and the ``skip_bad`` bookkeeping.

Every format (ImageFolder, CIFAR, COCO, VOC, dense maps, Fashion-MNIST, plain folders, the
embedded world) returns the same sample structure, so the rest of the pipeline never asks where
an image came from (MuST sec. 3.4: images from several datasets are mixed, each carrying the
labels it has).
"""

from __future__ import annotations

import warnings

from torch.utils.data import Dataset

from must.data.readers.errors import DataError, DataWarning
from must.data.sample import Sample


class ReaderDataset(Dataset[Sample]):
    """A map-style dataset of samples.

    ``keys[i]`` is the key of item ``i``; ``classes`` maps a task to its class names (index =
    label); ``tasks`` lists the tasks an item may carry (an item lacking one simply has no target
    for it). With ``skip_bad`` a bad item found at open time is left out and recorded in
    ``skipped`` as ``(file, reason)``; one found only at load time (an image that passes PIL's
    header check but does not decode) is recorded too and the next loadable item is returned in
    its place, because a map-style dataset cannot shrink once its length is known. Load-time
    records live in the process that loaded the item (a DataLoader worker's copy), the warning
    reaches the console from any process.
    """

    def __init__(self, name: str, tasks: tuple[str, ...], classes: dict[str, list[str]],
                 skip_bad: bool = False) -> None:
        self.name = name
        self.tasks = tasks
        self.classes = classes
        self.skip_bad = skip_bad
        self.keys: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self._failed: set[int] = set()

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Sample:
        count = len(self)
        if not -count <= index < count:
            raise IndexError(f"{self.name}: index {index} out of range for {count} items")
        index %= count
        if not self.skip_bad:
            return self._load(index)
        for offset in range(count):
            candidate = (index + offset) % count
            if candidate in self._failed:
                continue
            try:
                return self._load(candidate)
            except DataError as error:
                self._failed.add(candidate)
                self.skipped.append((error.path, error.problem))
                warnings.warn(f"{self.name}: skipped {error} (serving the next item instead)",
                              DataWarning, stacklevel=2)
        raise DataError(self.name, f"none of the {count} items could be loaded")

    def _load(self, index: int) -> Sample:
        raise NotImplementedError

    def _reject(self, error: DataError) -> None:
        """Raises ``error``, or records it when bad items are to be skipped."""
        if not self.skip_bad:
            raise error
        self.skipped.append((error.path, error.problem))

    def _report_skipped(self) -> None:
        """The one-line summary after opening, when anything was skipped."""
        if self.skipped:
            path, problem = self.skipped[0]
            warnings.warn(
                f"{self.name}: skipped {len(self.skipped)} bad input(s), kept {len(self)} items; "
                f"first: {path}: {problem} (full list in .skipped)", DataWarning, stacklevel=3)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, items={len(self)}, tasks={self.tasks})"
