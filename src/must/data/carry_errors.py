"""User errors met in DataLoader worker processes, carried to the main process intact.

A DataLoader rebuilds an exception raised in a worker as ``type(message)`` around the worker's
whole traceback text, or as a ``RuntimeError`` when the type takes other arguments (as
:class:`~must.errors.DataError` does). Either way a user error (a bad file, a label that does not
fit the task's options) would end the command in a traceback instead of its one-line message.
So the loaders below catch a :class:`~must.errors.MustError` where the worker meets it, hand the
error object over as the batch (it pickles), and raise it again in the main process. Any other
exception (a bug) takes DataLoader's usual way and keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from torch.utils.data import DataLoader, Dataset

from must.errors import MustError


@dataclass(frozen=True)
class RaisedInLoader:
    """What a loader process returns instead of a batch when it met a user error."""

    error: MustError


class CarryingErrors(Dataset):
    """``dataset`` whose batched reads (DataLoader's ``__getitems__``) return a
    :class:`RaisedInLoader` instead of raising a :class:`MustError`."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: Any) -> Any:
        return self.dataset[index]

    def __getitems__(self, indices: Sequence[Any]) -> list[Any] | RaisedInLoader:
        try:
            return [self.dataset[index] for index in indices]
        except MustError as error:
            return RaisedInLoader(error)


def carrying_collate(items: list[Any] | RaisedInLoader, collate: Callable[[list[Any]], Any]) -> Any:
    """``collate(items)``, passing a carried error on and carrying one ``collate`` raises."""
    if isinstance(items, RaisedInLoader):
        return items
    try:
        return collate(items)
    except MustError as error:
        return RaisedInLoader(error)


def raise_carried(batches: Iterator[Any]) -> Iterator[Any]:
    """``batches``, raising a carried user error in this process where it comes."""
    for batch in batches:
        if isinstance(batch, RaisedInLoader):
            raise batch.error
        yield batch


class ErrorCarryingLoader(DataLoader):
    """A re-iterable DataLoader over :class:`CarryingErrors` ``(dataset)`` with
    :func:`carrying_collate` around ``collate_fn``, whose iterators raise a carried error in this
    process. Its other arguments are DataLoader's."""

    def __init__(self, dataset: Dataset, collate_fn: Callable[[list[Any]], Any], **options: Any) -> None:
        super().__init__(CarryingErrors(dataset), collate_fn=functools.partial(carrying_collate, collate=collate_fn),
                         **options)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        return raise_carried(super().__iter__())
