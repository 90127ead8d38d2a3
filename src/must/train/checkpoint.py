"""Atomic checkpoints and random-number-generator states: what makes a resumed run end with the
same weights, bit for bit, as one that never stopped.

A checkpoint is written to a temporary file in the same directory and moved over the old one with
``os.replace`` (atomic on POSIX), so a process killed while writing leaves the previous checkpoint
intact. RNG states are gathered from every process, so each rank resumes with its own stream.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from must import distributed
from must.files import write_atomic


def save_atomically(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary sibling, fsync, then ``os.replace`` over ``path``."""
    write_atomic(path, lambda file: torch.save(state, file), durable=True)


def load(path: str | Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Loads a checkpoint written by :func:`save_atomically` (plain tensors and containers only,
    so ``weights_only`` loading is safe)."""
    return torch.load(path, map_location=device, weights_only=True)


def model_record(model: nn.Module) -> dict[str, Any]:
    """What a checkpoint records about ``model`` beyond its tensors (``model_record``): the
    input transform it was trained with (a transfer of it must feed the same), and for a
    :class:`~must.models.MultiTaskModel` subclass whatever else it records (its lasso's row names)."""
    record = getattr(model, "record", None)
    return dict(record()) if callable(record) else {"input_transform": "rgb"}


def rng_state() -> dict[str, Any]:
    """This process's Python, NumPy and torch (CPU and CUDA) generator states, as tensors and
    plain containers (no NumPy objects, so ``weights_only`` loading accepts them)."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what :func:`rng_state` captured."""
    random.setstate(_as_python_state(state["python"]))
    name, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_python_state(state: Any) -> tuple:
    # random.setstate wants tuples; a loaded checkpoint may hand back lists
    version, internal, gauss = state
    return version, tuple(internal), gauss


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (a collective: all ranks must call it)."""
    local = rng_state()
    if not distributed.is_initialized():
        return [local]
    states: list[Any] = [None] * distributed.world_size()
    torch.distributed.all_gather_object(states, local)
    return states


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
