"""One picture per image with every task's prediction side by side (MuST Figure 4), drawn by
the report's Figure-4 code on the window the model saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from must.models.loading import LoadedModel
from must.files import write_atomic
from must.report.figure import COLUMNS, compose, draw_row

PANEL = 192


def draw_panel(path: Path, image: Tensor, window: dict[str, Any], loaded: LoadedModel, key: str) -> None:
    """``image``: ``uint8 [3, S, S]`` (fitted, padded); ``window``: predictions on it."""
    picture = image.permute(1, 2, 0).numpy()
    normals = (loaded, window["normals"]) if "normals" in window else None
    panels = draw_row(picture, window, loaded, normals, PANEL)  # type: ignore[arg-type]
    titles = [title for title, task in COLUMNS if task in window] + (["normals"] if normals else [])
    canvas = compose([(f"{Path(key).name}\n{key}", panels)], titles, PANEL)
    write_atomic(path, lambda file: canvas.save(file, format="PNG"))
