"""Atomic checkpoint writes and RNG state capture / restore (what exact resumption rests on)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from must.train.checkpoint import gather_rng_states, load, rng_state, save_atomically, set_rng_state


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_rng_state_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    random.random(), np.random.rand(), torch.rand(3)  # move every generator off its seed
    save_atomically({"rng": rng_state()}, tmp_path / "state.pt")
    expected = _draws()
    _draws()
    set_rng_state(load(tmp_path / "state.pt")["rng"])  # weights_only load accepts it
    assert _draws() == expected
    assert len(gather_rng_states()) == 1  # one process


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    save_atomically({"step": 1, "weights": torch.ones(3)}, path)
    with pytest.raises(Exception):
        save_atomically({"step": 2, "bad": lambda: None}, path)  # pickling fails mid-write
    assert load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left behind
