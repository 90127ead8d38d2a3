"""ImageFolder (classification): ``root/<class>/<image>``.

Images may sit in sub-folders of a class folder; classes sorted by name give the label index, as
in torchvision's ``ImageFolder``. Keys are the image paths relative to ``root`` without suffix
(``cat/0001``).
"""

from __future__ import annotations

from pathlib import Path

from must.data.readers.compose import ComposedDataset, ImageEntry, LabelSource
from must.data.readers.errors import DataError
from must.data.readers.files import relative_key
from must.data.readers.unlabeled import KeyFunction, scan_image_files


def scan_image_folder(root: Path, classes: list[str] | None = None,
                      key_of: KeyFunction = relative_key
                      ) -> tuple[list[ImageEntry], LabelSource, list[DataError]]:
    """Entries, their labels and the problems of an ImageFolder tree.

    ``classes`` fixes the class list (and order) instead of the sorted folder names; a folder
    outside it is a problem.
    """
    if not root.is_dir():
        raise DataError(root, "image folder not found")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = folders
    if not classes:
        raise DataError(root, "no class folders (expected root/<class>/<image>)")
    index = {name: i for i, name in enumerate(classes)}
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    problems = [DataError(root / name, f"folder is not one of the {len(classes)} classes ({shown})")
                for name in folders if name not in index]
    entries, labels = [], {}
    candidates, file_problems = scan_image_files(root, key_of)
    problems += file_problems
    for entry in candidates:
        parts = entry.path.relative_to(root).parts
        if len(parts) == 1:
            problems.append(DataError(entry.path, "image is not inside a class folder"))
        elif parts[0] in index:
            entries.append(entry)
            labels[entry.key] = index[parts[0]]
    return entries, LabelSource(labels, list(classes), root), problems


class ImageFolder(ComposedDataset):
    """``root/<class>/<image>`` -> samples with a ``classification`` target."""

    def __init__(self, root: str | Path, *, classes: list[str] | None = None,
                 skip_bad: bool = False, limit: int | None = None) -> None:
        root = Path(root)
        entries, labels, problems = scan_image_folder(root, classes)
        super().__init__(f"imagefolder:{root}", entries, [labels], skip_bad=skip_bad, limit=limit,
                         problems=problems)
