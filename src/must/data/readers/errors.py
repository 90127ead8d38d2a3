"""The one error every reader raises for bad input (:class:`~must.errors.DataError`, defined with
the rest of the family), naming the file and what is wrong.

Corrupt or inconsistent inputs get a clear error naming the
file and the problem, or, where the user asks for it (``skip_bad``), are skipped and counted.
"""

from __future__ import annotations

from must.errors import DataError


class DataWarning(UserWarning):
    """Emitted once per opened dataset (and once per file failing at load time) when
    ``skip_bad`` dropped something."""


__all__ = ["DataError", "DataWarning"]
