"""The one family of errors a user can cause: a config key, a data file, a teacher, a checkpoint
or a pseudo-label shard that does not fit. Each names the file or key and the problem; the command
line prints exactly these (and a missing file) as one line, and lets everything else (a bug) end
in a traceback.

The rule for raising them: the check that refuses a value a user can set or a file a user can
give raises the fitting subclass itself (a config value or a name picked from a family dict:
:class:`ConfigError`; a data file: :class:`DataError`; ...). A plain ``ValueError``,
``KeyError`` or ``TypeError`` means an internal invariant broke, a bug, and is never turned into
a one-line message by the code that calls it.

Each subclass also derives from ``ValueError``: code that validates a value may raise the specific
error, and callers that handle bad values as ``ValueError`` keep working.
"""

from __future__ import annotations

from pathlib import Path


class MustError(Exception):
    """Base of every error a user can cause (see the module docstring)."""


class ConfigError(MustError, ValueError):
    """A config key or value (or a command-line flag, or a name picked from one of the explicit
    family dicts) that does not fit; the message names the key and what is valid."""


class DataError(MustError, ValueError):
    """Bad input data. ``path`` is the offending file, ``problem`` says what is wrong with it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self) -> tuple[type[DataError], tuple[str, str]]:
        # Keeps the error picklable, so it crosses DataLoader worker processes intact.
        return DataError, (self.path, self.problem)


class TeacherError(MustError, ValueError):
    """A teacher that cannot label: wrong task, class list or checkpoint; names the teacher."""


class CheckpointError(MustError, ValueError):
    """A weight file that cannot be read or does not fit the model; the message names the file."""


class ShardError(MustError, ValueError):
    """A shard that is missing, truncated or does not match its manifest, or pseudo labels that do
    not fit the data they are read with; names the shard or label directory."""
