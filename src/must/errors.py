"""The one family of errors a user can cause: a config key, a data file, a teacher, a checkpoint
or a pseudo-label shard that does not fit. Each names the file or key and the problem; the command
line prints exactly these (and a missing file) as one line, and lets everything else (a bug) end
in a traceback.

Each subclass also derives from ``ValueError``: code that validates a value may raise the specific
error, and callers that handle bad values as ``ValueError`` keep working.
"""

from __future__ import annotations


class MustError(Exception):
    """Base of every error a user can cause (see the module docstring)."""
