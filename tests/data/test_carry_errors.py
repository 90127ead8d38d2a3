"""A user error met in a loader process reaches the main process as itself (type and one-line
message), a bug keeps DataLoader's traceback."""

from __future__ import annotations

import itertools

import pytest
import torch

from must.data.loader import make_eval_loader, make_loader
from must.data.sample import Sample
from must.errors import ConfigError, DataError
from must.tasks import ClassificationTask


class Failing(torch.utils.data.Dataset):
    """Four images; item 2 raises ``error``."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> Sample:
        if index == 2:
            raise self.error
        return Sample(f"item-{index}", torch.zeros(3, 8, 8, dtype=torch.uint8), {"classification": 0})


TASKS = {"classification": ClassificationTask(3)}
COMMON = dict(batch_size=4, output_size=8, rank=0, world_size=1)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_data_error_in_a_loader_process_is_the_same_error(workers: int) -> None:
    stream = make_loader([Failing(DataError("pool/item-2.png", "truncated"))], TASKS, seed=0,
                         workers=workers, **COMMON)
    with pytest.raises(DataError) as caught:
        next(stream)
    assert str(caught.value) == "pool/item-2.png: truncated" and caught.value.problem == "truncated"
    loader = make_eval_loader([Failing(DataError("pool/item-2.png", "truncated"))], TASKS, workers=workers,
                              **COMMON)
    with pytest.raises(DataError, match=r"^pool/item-2.png: truncated$"):
        list(loader)


def test_a_label_the_task_refuses_is_carried_too() -> None:
    bad_label = [Sample(f"item-{i}", torch.zeros(3, 8, 8, dtype=torch.uint8), {"classification": 7})
                 for i in range(4)]
    stream = make_loader([bad_label], TASKS, seed=0, workers=1, **COMMON)  # type: ignore[list-item]
    with pytest.raises(ConfigError, match=r"^classification label 7 outside \[0, 3\)"):
        next(stream)


def test_a_bug_in_a_loader_process_is_not_carried() -> None:
    stream = make_loader([Failing(KeyError("a bug"))], TASKS, seed=0, workers=1, **COMMON)
    with pytest.raises(KeyError, match="Traceback"):
        list(itertools.islice(stream, 1))
