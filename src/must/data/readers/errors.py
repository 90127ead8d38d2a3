"""The one error every reader raises for bad input, naming the file and what is wrong.

Corrupt or inconsistent inputs get a clear error naming the
file and the problem, or, where the user asks for it (``skip_bad``), are skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

from must.errors import MustError


class DataError(MustError, ValueError):
    """Bad input data. ``path`` is the offending file, ``problem`` says what is wrong with it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type[DataError], tuple[str, str]]:
        # Keeps the error picklable, so it crosses DataLoader worker processes intact.
        return DataError, (self.path, self.problem)


class DataWarning(UserWarning):
    """Emitted once per opened dataset (and once per file failing at load time) when
    ``skip_bad`` dropped something."""
