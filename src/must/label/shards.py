"""Pseudo labels on disk: WebDataset tar shards with deterministic bytes (MuST sec. 3.2).

One sample per image; its members are ``<key>.<entry>`` with one or more entries per task:

======================  =========================================================================
``classification``      ``classification.npy``: float16 ``[K]`` probabilities; or, in the top-k
                        form, ``classification.indices.npy`` (int32 ``[k]``) and
                        ``classification.values.npy`` (float16 ``[k]``)
``detection``           ``detection.boxes.npy`` float32 ``[N, 4]`` xyxy pixels,
                        ``detection.labels.npy`` int32 ``[N]``, ``detection.scores.npy`` float32
``segmentation``        ``segmentation.png``: 8-bit class ids, 255 = ignore
``depth``               ``depth.npy``: float16 ``[H, W]`` (float32 when a value does not fit
                        float16: the reader takes the dtype from the ``.npy`` header)
``normals``             ``normals.npy``: float16 ``[3, H, W]``
======================  =========================================================================

Dense labels and boxes are at the source image's size (the image the student's reader returns).

Keys are percent-encoded in member names (``.`` and anything outside ``[A-Za-z0-9_-/]``): the
WebDataset convention splits a member name at the first dot of its base name, so a key like
``img.v2`` would otherwise read back as ``img``.

Deterministic bytes: member mtime 0, user and group ``must``, mode 0444, members in sample order
and, within a sample, in sorted entry order; PNG and ``.npy`` encodings are deterministic. The
same labels therefore give byte-identical shards in any run, process count or resume.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from must.data.sample import IGNORE_INDEX
from must.errors import ShardError
from must.files import file_sha256, temporary_sibling
from must.label.tar import TarStream

SHARD_PATTERN = "shard-{index:06d}.tar"
_SAFE_KEY = re.compile(r"[A-Za-z0-9_\-/]")


def shard_name(index: int) -> str:
    return SHARD_PATTERN.format(index=index)


def encode_key(key: str) -> str:
    """A key safe as a WebDataset member prefix: no dots, no leading slash (see module doc)."""
    encoded = "".join(c if _SAFE_KEY.fullmatch(c) else quote(c, safe="") for c in key)
    encoded = encoded.replace(".", "%2E")  # quote() keeps "." unescaped
    return "%2F" + encoded[1:] if encoded.startswith("/") else encoded


def decode_key(encoded: str) -> str:
    return unquote(encoded)


def split_member(name: str) -> tuple[str, str]:
    """``"dir/key.segmentation.png"`` -> (decoded key, ``"segmentation.png"``)."""
    directory, _, base = name.rpartition("/")
    stem, dot, entry = base.partition(".")
    if not dot:
        raise ValueError(f"member '{name}' has no entry suffix")
    return decode_key(f"{directory}/{stem}" if directory else stem), entry


def entry_task(entry: str) -> str:
    """The task an entry belongs to: ``"detection.boxes.npy"`` -> ``"detection"``."""
    return entry.partition(".")[0]


# --- per-task encodings -----------------------------------------------------------------------


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def read_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _half_or_single(array: np.ndarray) -> np.ndarray:
    """float16 when every finite value fits (as the format asks), float32 otherwise."""
    finite = array[np.isfinite(array)]
    if finite.size and float(np.abs(finite).max()) > float(np.finfo(np.float16).max):
        return array.astype(np.float32)
    return array.astype(np.float16)


def _encode_classification(target: Tensor, top_k: int | None) -> dict[str, bytes]:
    probabilities = target.detach().float().cpu()
    if top_k is None or top_k >= probabilities.numel():
        return {"classification.npy": npy_bytes(probabilities.numpy().astype(np.float16))}
    kept = probabilities.topk(top_k)
    return {"classification.indices.npy": npy_bytes(kept.indices.numpy().astype(np.int32)),
            "classification.values.npy": npy_bytes(kept.values.numpy().astype(np.float16))}


def _encode_detection(target: Mapping[str, Tensor], top_k: int | None) -> dict[str, bytes]:
    boxes = target["boxes"].detach().to("cpu", torch.float32).reshape(-1, 4).numpy()
    labels = target["labels"].detach().cpu().numpy().astype(np.int32)
    scores = target.get("scores")
    scores_array = (np.ones(len(labels), np.float32) if scores is None
                    else scores.detach().to("cpu", torch.float32).numpy())
    return {"detection.boxes.npy": npy_bytes(boxes), "detection.labels.npy": npy_bytes(labels),
            "detection.scores.npy": npy_bytes(scores_array)}


def _encode_segmentation(target: Tensor, top_k: int | None) -> dict[str, bytes]:
    labels = target.detach().cpu()
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > IGNORE_INDEX):
        raise ValueError(f"segmentation labels must be in [0, {IGNORE_INDEX}], got "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    buffer = io.BytesIO()
    Image.fromarray(labels.numpy().astype(np.uint8), mode="L").save(buffer, format="PNG")
    return {"segmentation.png": buffer.getvalue()}


def _dense_encoder(name: str) -> Callable[[Tensor, int | None], dict[str, bytes]]:
    def encode(target: Tensor, top_k: int | None) -> dict[str, bytes]:
        return {f"{name}.npy": npy_bytes(_half_or_single(target.detach().float().cpu().numpy()))}

    return encode


def _decode_classification(entries: Mapping[str, bytes], num_classes: int | None) -> Tensor:
    """float32 ``[K]`` renormalized to sum 1 (float16 storage leaves the sum a hair off)."""
    if "classification.npy" in entries:
        probabilities = torch.from_numpy(read_npy(entries["classification.npy"]).astype(np.float32))
    else:
        indices = torch.from_numpy(read_npy(entries["classification.indices.npy"]).astype(np.int64))
        values = torch.from_numpy(read_npy(entries["classification.values.npy"]).astype(np.float32))
        if num_classes is None:
            raise ValueError("the top-k classification form needs the class count")
        probabilities = torch.zeros(num_classes).scatter_(0, indices, values)
    return probabilities / probabilities.sum().clamp_min(torch.finfo(torch.float32).tiny)


def _decode_detection(entries: Mapping[str, bytes], num_classes: int | None) -> dict[str, Tensor]:
    boxes = torch.from_numpy(read_npy(entries["detection.boxes.npy"]).astype(np.float32))
    return {"boxes": boxes.reshape(-1, 4),
            "labels": torch.from_numpy(read_npy(entries["detection.labels.npy"]).astype(np.int64)),
            "scores": torch.from_numpy(read_npy(entries["detection.scores.npy"]).astype(np.float32))}


def _decode_segmentation(entries: Mapping[str, bytes], num_classes: int | None) -> Tensor:
    with Image.open(io.BytesIO(entries["segmentation.png"])) as image:
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).astype(np.int64))


def _dense_decoder(name: str) -> Callable[[Mapping[str, bytes], int | None], Tensor]:
    def decode(entries: Mapping[str, bytes], num_classes: int | None) -> Tensor:
        return torch.from_numpy(read_npy(entries[f"{name}.npy"]).astype(np.float32))

    return decode


@dataclass(frozen=True)
class Codec:
    encode: Callable[[Any, int | None], dict[str, bytes]]
    """(target, top_k) -> {entry: bytes}."""
    decode: Callable[[Mapping[str, bytes], int | None], Any]
    """({entry: bytes} of one task, class count) -> target in must.data.sample's convention."""


CODECS: dict[str, Codec] = {
    "classification": Codec(_encode_classification, _decode_classification),
    "detection": Codec(_encode_detection, _decode_detection),
    "segmentation": Codec(_encode_segmentation, _decode_segmentation),
    "depth": Codec(_dense_encoder("depth"), _dense_decoder("depth")),
    "normals": Codec(_dense_encoder("normals"), _dense_decoder("normals")),
}
"""Task -> how its pseudo label is stored (one explicit dict)."""


def codec(task: str) -> Codec:
    if task not in CODECS:
        raise ShardError(f"task '{task}' has no pseudo-label storage; supported: {', '.join(CODECS)}")
    return CODECS[task]


def encode_labels(labels: Mapping[str, Any], top_k: int | None = None) -> dict[str, bytes]:
    """``{task: target}`` -> ``{entry: bytes}`` for one sample (``top_k``: classification only)."""
    entries: dict[str, bytes] = {}
    for task, target in labels.items():
        entries.update(codec(task).encode(target, top_k))
    return entries


def decode_labels(entries: Mapping[str, bytes], num_classes: Mapping[str, int | None] | None = None,
                  tasks: set[str] | None = None) -> dict[str, Any]:
    """``{entry: bytes}`` of one sample -> ``{task: target}`` (only ``tasks`` when given)."""
    by_task: dict[str, dict[str, bytes]] = {}
    for entry, data in entries.items():
        by_task.setdefault(entry_task(entry), {})[entry] = data
    counts = num_classes or {}
    return {task: codec(task).decode(parts, counts.get(task))
            for task, parts in by_task.items() if tasks is None or task in tasks}


# --- writing and reading shards ---------------------------------------------------------------


@dataclass(frozen=True)
class ShardInfo:
    name: str
    sha256: str
    bytes: int
    samples: int


class ShardWriter:
    """Writes one shard under a temporary name; :meth:`finish` closes and hashes it, :meth:`publish`
    renames it into place. A crash leaves only a temporary file, never a torn ``shard-*.tar``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.temporary = temporary_sibling(self.path)
        self.samples = 0
        self._file = open(self.temporary, "wb")  # noqa: SIM115 - closed in finish / abort
        self._tar = TarStream(self._file, user="must", group="must", mode=0o444, mtime=0)

    def write(self, key: str, entries: Mapping[str, bytes]) -> None:
        """One sample: members ``<key>.<entry>`` in sorted entry order (WebDataset's layout)."""
        prefix = encode_key(key)
        for entry in sorted(entries):
            self._tar.add(f"{prefix}.{entry}", entries[entry])
        self.samples += 1

    def finish(self) -> ShardInfo:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return ShardInfo(self.path.name, file_sha256(self.temporary), self.temporary.stat().st_size,
                         self.samples)

    def publish(self) -> None:
        os.replace(self.temporary, self.path)

    def abort(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.temporary.unlink(missing_ok=True)


MemberIndex = list[tuple[str, dict[str, tuple[int, int]]]]
"""Per sample in shard order: (key, {entry: (data offset, size)})."""


def index_shard(path: Path) -> MemberIndex:
    """Reads a shard's tar headers (not its data): where every entry of every sample lies."""
    samples: MemberIndex = []
    try:
        with tarfile.open(path, "r:") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, entry = split_member(member.name)
                if not samples or samples[-1][0] != key:
                    samples.append((key, {}))
                samples[-1][1][entry] = (member.offset_data, member.size)
    except FileNotFoundError:
        raise ShardError(f"{path}: shard file not found") from None
    except (tarfile.TarError, ValueError, EOFError) as error:
        raise ShardError(f"{path}: not a readable tar shard (truncated or corrupt?): {error}") from None
    return samples


def iterate_shard(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {entry: bytes}) for every sample of a shard, in order."""
    with open(path, "rb") as handle:
        for key, entries in index_shard(path):
            data = {}
            for entry, (offset, size) in entries.items():
                handle.seek(offset)
                data[entry] = handle.read(size)
            yield key, data
