"""Files every stage writes: atomically (a crash or a reader never sees half a file) and hashed.

Each write goes to a hidden sibling named after the file and the writing process
(``.NAME.PID.tmp``), then ``os.replace`` puts it in place; a killed run leaves at most such a
sibling, which :func:`remove_stale_temporaries` sweeps away.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

CHECKPOINT_NAME = "checkpoint.pt"
"""The training engine's checkpoint in a run directory (teachers, student, transfer cells)."""


def temporary_sibling(path: Path) -> Path:
    """Where :func:`write_atomic` writes ``path`` first (one per process: several processes may
    write the same file, the last rename wins)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_atomic(path: str | Path, data: str | bytes | Callable[[BinaryIO], None],
                 durable: bool = False) -> Path:
    """Writes ``data`` (text as UTF-8, bytes, or a function writing to the open binary file, e.g.
    ``lambda file: torch.save(state, file)``) to ``path`` through a temporary sibling and a rename.
    ``durable``: flush it to the disk before the rename (checkpoints: a power cut keeps the old)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    try:
        with open(temporary, "wb") as file:
            if callable(data):
                data(file)
            else:
                file.write(data.encode("utf-8") if isinstance(data, str) else data)
            if durable:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_atomic_by_name(path: str | Path, write: Callable[[Path], None]) -> Path:
    """:func:`write_atomic` for writers that take a file name, not an open file (the ONNX and
    TorchScript exporters): ``write(temporary)``, then the rename. The temporary keeps ``path``'s
    suffix, from which such writers may take the format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_sibling(path)
    temporary = temporary.with_name(temporary.name + path.suffix)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def remove_stale_temporaries(path: Path) -> None:
    """Removes what interrupted writes of ``path`` left behind (any process's)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp*"):
        stale.unlink(missing_ok=True)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
