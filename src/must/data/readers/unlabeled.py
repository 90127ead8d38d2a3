"""Plain folders of unlabeled images: the shared image set teachers pseudo-label (MuST sec. 3.2).

Read recursively; keys are the paths relative to the root without suffix (``a/b/0001``). A file
that is not an image is bad input, not something to pass over silently.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from must.data.readers.compose import ComposedDataset, ImageEntry
from must.data.readers.errors import DataError
from must.data.readers.files import check_image_suffix, list_files, relative_key

KeyFunction = Callable[[Path, Path], str]
"""(file, root) -> key."""


def scan_image_files(root: Path, key_of: KeyFunction = relative_key
                     ) -> tuple[list[ImageEntry], list[DataError]]:
    """Every image file under ``root`` as an entry; every other file as a problem."""
    entries, problems = [], []
    for path in list_files(root):
        try:
            check_image_suffix(path)
        except DataError as error:
            problems.append(error)
            continue
        entries.append(ImageEntry(key_of(path, root), path))
    return entries, problems


class UnlabeledFolder(ComposedDataset):
    """Every image under ``root`` (recursive), keys = relative path without suffix, no targets."""

    def __init__(self, root: str | Path, *, skip_bad: bool = False,
                 limit: int | None = None) -> None:
        root = Path(root)
        entries, problems = scan_image_files(root)
        if not entries and not problems:
            raise DataError(root, "no image files found")
        super().__init__(f"folder:{root}", entries, [], skip_bad=skip_bad, limit=limit,
                         problems=problems)
