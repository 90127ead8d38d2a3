"""The images ``must predict`` reads: any reader's items decoded and fitted into the model's
window in DataLoader workers, a bad image coming back as an error record (stop naming it, or
``skip_bad``: count it), and the ids the outputs name them by.

An image is fitted into the square window the model was trained at with its aspect ratio kept:
its longer side scaled to the window's side, placed at the top-left, the rest padded (the training
geometry of MuST sec. 3.4 at scale 1, without crop or flip: :meth:`Geometry.fit`). Each task maps
its predictions back to the source size (``Task.output_at_source_size``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from must.data.geometry import Geometry
from must.data.readers import ComposedDataset, DataError, ReaderDataset
from must.data.readers.coco import CocoBoxes
from must.data.readers.files import load_image
from must.predict.writers import ImageInfo


def fit_image(image: Tensor, window: int) -> tuple[Tensor, Geometry]:
    """``uint8`` or float ``[3, H, W]`` -> the same dtype ``[3, window, window]`` and its geometry."""
    geometry = Geometry.fit((int(image.shape[-2]), int(image.shape[-1])), (window, window))
    if image.dtype == torch.uint8:
        return geometry.warp_image(image), geometry
    return geometry.warp_dense(image, mode="bilinear", fill=0.0), geometry


@dataclass
class FittedImage:
    index: int
    image: Tensor | None = None
    """``uint8 [3, S, S]``: the image fitted into the window (aspect ratio kept, padded)."""
    geometry: Geometry | None = None
    error: DataError | None = None


class FittedImages(Dataset[FittedImage]):
    def __init__(self, dataset: ReaderDataset, window: int) -> None:
        # The reader's own skip_bad would serve the next item under the failed index: a
        # prediction must never be written under another image's name.
        self.dataset = copy.copy(dataset)
        self.dataset.skip_bad = False
        self.window = window

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> FittedImage:
        try:
            if isinstance(self.dataset, ComposedDataset):  # decode the image alone, not the targets
                image = load_image(self.dataset.path_of(index))
            else:
                image = self.dataset[index].image
        except DataError as error:
            return FittedImage(index, error=error)
        fitted, geometry = fit_image(image, self.window)
        return FittedImage(index, fitted, geometry)


def image_loader(images: FittedImages, indices: Sequence[int], batch_size: int,
                 workers: int) -> DataLoader:
    batches = [list(indices[start:start + batch_size]) for start in range(0, len(indices), batch_size)]
    return DataLoader(images, batch_sampler=batches, num_workers=workers, collate_fn=list,
                      prefetch_factor=4 if workers > 0 else None)


def coco_source(dataset: ReaderDataset) -> CocoBoxes | None:
    sources = getattr(dataset, "sources", [])
    return next((source for source in sources if isinstance(source, CocoBoxes)), None)


def image_infos(dataset: ReaderDataset, root: Path) -> list[ImageInfo]:
    """Every item's key, id and file: a COCO set's own image ids (so ``loadRes`` reads the results
    against its annotations), otherwise 1, 2, ... in the reader's order."""
    coco = coco_source(dataset)
    id_of = {key: image_id for image_id, key in coco.images.key_of_id.items()} if coco else {}
    infos = []
    for index, key in enumerate(dataset.keys):
        file_name = key
        if isinstance(dataset, ComposedDataset):
            path = dataset.path_of(index)
            file_name = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        infos.append(ImageInfo(key, id_of.get(key, index + 1), file_name))
    return infos


def category_ids(dataset: ReaderDataset, class_names: Sequence[str]) -> tuple[list[int], str]:
    """Detection label -> category id: a COCO set's own ids when it names every class of the
    model, otherwise ``label + 1`` (COCO's ids start at 1); and which of the two it is."""
    coco = coco_source(dataset)
    if coco is not None:
        id_of = dict(zip(coco.classes, coco.category_ids))
        if all(name in id_of for name in class_names):
            return [id_of[name] for name in class_names], "dataset"
    return [label + 1 for label in range(len(class_names))], "assigned"
