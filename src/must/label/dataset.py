"""Reading pseudo labels back for the student (MuST sec. 3.4: "each image carries the labels it
really has and pseudo labels for every other task"; supervised and pseudo labels are treated the
same way).

:class:`PseudoLabels` opens a ``must label`` output: it checks every shard against the manifest
(size, hash, sample count: a truncated or replaced shard is an error naming it), indexes where
each key's entries lie (from the tar headers; a few numbers per image), and reads one key's labels
by seeking into its shard. :class:`WithPseudoLabels` adds them to any reader's samples, for the
tasks a sample has no real label for. Both pickle without open files (DataLoader workers open
their own, lazily).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from must.data.sample import Sample
from must.files import file_sha256
from must.label.manifest import Manifest, read_manifest
from must.label.shards import ShardError, decode_labels, entry_task, index_shard

Verify = Literal["sha256", "size"]
DENSE_TASKS = ("segmentation", "depth", "normals")
MAX_OPEN_SHARDS = 16


class PseudoLabels:
    """The pseudo labels in ``directory``: ``get(key) -> {task: target}``.

    ``verify="sha256"`` hashes every shard at open (reads them once); ``"size"`` checks sizes and
    sample counts only. Either way a tar that ends early is refused.
    """

    def __init__(self, directory: str | Path, verify: Verify = "sha256") -> None:
        self.directory = Path(directory)
        self.manifest: Manifest = read_manifest(self.directory)
        self.tasks: list[str] = self.manifest.tasks
        self.num_classes = {t.task: t.num_classes for t in self.manifest.teachers}
        self.classes = {t.task: list(t.class_names) for t in self.manifest.teachers
                        if t.class_names is not None}
        self._entries: list[str] = []
        self._rows: dict[str, int] = {}
        self._build_index(verify)
        self._handles: OrderedDict[int, BinaryIO] = OrderedDict()
        self._pid = os.getpid()

    def _build_index(self, verify: Verify) -> None:
        shard_of, offsets, sizes = [], [], []
        columns: dict[str, int] = {}
        for number, record in enumerate(self.manifest.shards):
            path = self.directory / record.name
            _check_shard(path, record.bytes, record.sha256 if verify == "sha256" else None)
            samples = index_shard(path)
            if len(samples) != record.samples:
                raise ShardError(f"{path}: {len(samples)} samples, the manifest says {record.samples}")
            for key, entries in samples:
                if key in self._rows:
                    raise ShardError(f"{path}: key '{key}' also in an earlier shard")
                self._rows[key] = len(shard_of)
                shard_of.append(number)
                row_offsets, row_sizes = [-1] * len(columns), [-1] * len(columns)
                for entry, (offset, size) in entries.items():
                    if entry not in columns:
                        columns[entry] = len(columns)
                        for row in offsets:
                            row.append(-1)
                        for row in sizes:
                            row.append(-1)
                        row_offsets.append(-1)
                        row_sizes.append(-1)
                    row_offsets[columns[entry]], row_sizes[columns[entry]] = offset, size
                offsets.append(row_offsets)
                sizes.append(row_sizes)
        self._entries = list(columns)
        # numpy arrays: a few bytes per image rather than a dict of tuples (M8: millions of keys)
        self._shard = np.asarray(shard_of, dtype=np.int32)
        self._offsets = np.asarray(offsets, dtype=np.int64).reshape(len(shard_of), len(columns))
        self._sizes = np.asarray(sizes, dtype=np.int64).reshape(len(shard_of), len(columns))

    @property
    def keys(self) -> list[str]:
        return list(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def get(self, key: str, tasks: Sequence[str] | None = None) -> dict[str, Any]:
        """``{task: target}`` of ``key`` (only ``tasks`` when given), in the conventions of
        :mod:`must.data.sample`: soft probabilities float32 ``[K]``, a detection dict, int64
        segmentation with 255 = ignore, float32 depth."""
        row = self._rows.get(key)
        if row is None:
            raise ShardError(f"no pseudo label for key '{key}' in {self.directory}")
        wanted = None if tasks is None else set(tasks)
        handle = self._handle(int(self._shard[row]))
        raw: dict[str, bytes] = {}
        for column, entry in enumerate(self._entries):
            size = int(self._sizes[row, column])
            if size < 0 or (wanted is not None and entry_task(entry) not in wanted):
                continue
            handle.seek(int(self._offsets[row, column]))
            raw[entry] = handle.read(size)
        return decode_labels(raw, self.num_classes)

    def _handle(self, shard: int) -> BinaryIO:
        """An open file of ``shard`` for this process (a forked worker opens its own)."""
        if self._pid != os.getpid():
            self._handles, self._pid = OrderedDict(), os.getpid()
        handle = self._handles.get(shard)
        if handle is None:
            if len(self._handles) >= MAX_OPEN_SHARDS:
                self._handles.popitem(last=False)[1].close()
            handle = open(self.directory / self.manifest.shards[shard].name, "rb")  # noqa: SIM115
            self._handles[shard] = handle
        self._handles.move_to_end(shard)
        return handle

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()
        return state

    def __del__(self) -> None:
        if self.__dict__.get("_pid") == os.getpid():
            self.close()


def _check_shard(path: Path, expected_bytes: int, expected_sha256: str | None) -> None:
    if not path.is_file():
        raise ShardError(f"{path}: shard listed in the manifest is missing")
    size = path.stat().st_size
    if size != expected_bytes:
        raise ShardError(f"{path}: {size} bytes, the manifest says {expected_bytes} "
                         f"(truncated or rewritten after labeling)")
    if expected_sha256 is not None and file_sha256(path) != expected_sha256:
        raise ShardError(f"{path}: SHA-256 differs from the manifest (modified after labeling)")


MissingPolicy = Literal["error", "skip"]


class WithPseudoLabels(Dataset[Sample]):
    """``dataset``'s samples plus pseudo targets for every task they lack (real labels win).

    ``missing="error"``: a sample key without pseudo labels in one of ``pseudo`` fails at
    construction, naming the key; ``"skip"``: such items are left out.
    """

    def __init__(self, dataset: Dataset[Sample], pseudo: Sequence[PseudoLabels],
                 missing: MissingPolicy = "error") -> None:
        if missing not in ("error", "skip"):
            raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
        self.dataset = dataset
        self.pseudo = list(pseudo)
        owners: dict[str, Path] = {}
        for labels in self.pseudo:
            for task in labels.tasks:
                if task in owners:
                    raise ShardError(f"task '{task}' has pseudo labels in both {owners[task]} and "
                                     f"{labels.directory}: keep one")
                owners[task] = labels.directory
        self.tasks = tuple(dict.fromkeys([*getattr(dataset, "tasks", ()), *owners]))
        self.classes = self._merged_classes()
        self.name = f"{getattr(dataset, 'name', type(dataset).__name__)}+pseudo"
        base_keys = list(getattr(dataset, "keys"))
        self._indices = self._select(base_keys, missing)
        self.keys = [base_keys[index] for index in self._indices]

    def _merged_classes(self) -> dict[str, list[str]]:
        classes = dict(getattr(self.dataset, "classes", {}) or {})
        for labels in self.pseudo:
            for task, names in labels.classes.items():
                if task in classes and list(classes[task]) != names:
                    raise ShardError(f"{labels.directory}: {task} pseudo labels use classes "
                                     f"{names}, the dataset's real labels {list(classes[task])}")
                classes.setdefault(task, names)
        return classes

    def _select(self, keys: list[str], missing: MissingPolicy) -> list[int]:
        selected = []
        for index, key in enumerate(keys):
            lacking = [labels.directory for labels in self.pseudo if key not in labels]
            if not lacking:
                selected.append(index)
            elif missing == "error":
                absent = sum(1 for k in keys if any(k not in labels for labels in self.pseudo))
                raise ShardError(f"no pseudo label for key '{key}' in {lacking[0]} ({absent} of "
                               f"{len(keys)} keys lack one); label this dataset, or pass "
                               "missing='skip'")
        return selected

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, index: int) -> Sample:
        sample = self.dataset[self._indices[index]]
        for labels in self.pseudo:
            wanted = [task for task in labels.tasks if task not in sample.targets]
            if not wanted:
                continue
            for task, target in labels.get(sample.key, wanted).items():
                _check_size(task, target, sample, labels.directory)
                sample.targets[task] = target
        return sample


def _check_size(task: str, target: Any, sample: Sample, directory: Path) -> None:
    """Dense pseudo labels are stored at the source image's size: they must match the image."""
    if task in DENSE_TASKS and isinstance(target, torch.Tensor):
        if tuple(target.shape[-2:]) != sample.size:
            raise ShardError(f"{directory}: {task} pseudo label of '{sample.key}' is "
                             f"{tuple(target.shape[-2:])}, its image {sample.size}: labeled from "
                             "other images?")
