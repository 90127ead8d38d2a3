"""Relative position / context prediction (Doersch, Gupta & Efros 2015, "Unsupervised Visual
Representation Learning by Context Prediction").

* views:  two patches of a 3x3 arrangement on a random square of the image resized to
          ``view_size``: the centre one and one of its 8 neighbours. Neighbouring patches are
          separated by a gap and each is jittered, so low-level cues (edges continuing across the
          border, texture alignment) cannot solve the task. Sec. 3.1 uses 96-pixel patches with
          "a gap of half the patch size" and jitter "by up to 7 pixels"; our patches are smaller,
          so both are scaled to the patch: the gap is half a patch and the jitter
          ``round(7 / 96 * patch_size)`` pixels (defaults: 22-pixel patches, gap 11, jitter 2, on
          a 96-pixel view: 3 * 22 + 2 * 11 + 2 * 2 = 92 pixels fit). Label: where the second
          patch lies::

              0 1 2
              3 . 4
              5 6 7

* head:   late fusion (sec. 3.2): both patches go through the shared trunk (a Siamese pair, here
          one batch of ``2B`` patches rearranged into pairs, Doersch & Zisserman 2017 sec. 3);
          pooled C5 -> a shared linear embedding per patch, the pair concatenated -> MLP -> 8 logits.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.models.features import Features, FeatureSpec
from must.tasks.self_supervised.base import (
    FeaturesFn,
    PretextClassificationTask,
    mlp,
    pooled_c5,
    square_view,
    write_text,
)

NEIGHBOURS: tuple[tuple[int, int], ...] = (
    (-1, -1), (-1, 0), (-1, 1),
    (0, -1), (0, 1),
    (1, -1), (1, 0), (1, 1),
)
"""(row, column) step of each label's patch from the centre patch, in label order."""


def label_of(step: tuple[int, int]) -> int:
    """The label of a neighbour at (row, column) step ``step`` from the centre."""
    return NEIGHBOURS.index(step)


def paper_gap(patch_size: int) -> int:
    """Doersch et al. sec. 3.1: "a gap of half the patch size" between neighbouring patches."""
    return patch_size // 2


def paper_jitter(patch_size: int) -> int:
    """Doersch et al. sec. 3.1's jitter of up to 7 pixels on 96-pixel patches, scaled to the patch."""
    return round(7 * patch_size / 96)


class PairHead(nn.Module):
    """Pooled C5 of ``2B`` patches (pair-major) -> shared ``dim`` embedding -> pairs concatenated
    -> MLP -> ``num_outputs`` logits."""

    reads_pyramid = False  # pooled C5 only: the model need not run the FPN for it

    def __init__(self, in_channels: int, dim: int, hidden: int, num_outputs: int) -> None:
        super().__init__()
        self.embed = nn.Linear(in_channels, dim)
        self.classifier = mlp([2 * dim, hidden, num_outputs])

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        embedded = torch.relu(self.embed(pooled_c5(features)))
        return self.classifier(embedded.reshape(-1, 2 * embedded.shape[-1]))


class RelativePositionTask(PretextClassificationTask):
    name = "relative_position"
    num_outputs = len(NEIGHBOURS)

    def __init__(self, view_size: int = 96, patch_size: int = 22, gap: int | None = None,
                 jitter: int | None = None, embedding_dim: int = 128, hidden_dim: int = 256) -> None:
        gap = paper_gap(patch_size) if gap is None else gap
        jitter = paper_jitter(patch_size) if jitter is None else jitter
        if 3 * patch_size + 2 * gap + 2 * jitter > view_size:
            raise ConfigError(f"3 patches of {patch_size} with gap {gap} and jitter {jitter} do not fit "
                              f"in a {view_size}-pixel view")
        if 2 * jitter >= patch_size + gap:
            raise ConfigError("jitter must stay below half the patch spacing (labels would be ambiguous)")
        self.view_size = view_size
        self.patch_size = patch_size
        self.gap = gap
        self.jitter = jitter
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim

    @property
    def spacing(self) -> int:
        """Distance between the top-left corners of neighbouring patches."""
        return self.patch_size + self.gap

    def build_head(self, spec: FeatureSpec) -> PairHead:
        return PairHead(spec.c5_channels, self.embedding_dim, self.hidden_dim, self.num_outputs)

    def make_views(self, image: Tensor, generator: torch.Generator,
                   index: int | None = None) -> dict[str, Tensor]:
        """``{"patches": uint8 [2, 3, p, p] (centre, neighbour), "label": int64 [],
        "corners": int64 [2, 2] (top, left) of each patch in the square view}``."""
        square = square_view(image, self.view_size, generator)
        extent = 3 * self.patch_size + 2 * self.gap
        origin = [self.jitter + int(torch.randint(0, self.view_size - extent - 2 * self.jitter + 1, (),
                                                  generator=generator)) for _ in range(2)]
        label = int(torch.randint(0, self.num_outputs, (), generator=generator))
        row_step, column_step = NEIGHBOURS[label]
        corners = []
        for row, column in ((1, 1), (1 + row_step, 1 + column_step)):
            jitter = torch.randint(-self.jitter, self.jitter + 1, (2,), generator=generator)
            corners.append((origin[0] + row * self.spacing + int(jitter[0]),
                            origin[1] + column * self.spacing + int(jitter[1])))
        size = self.patch_size
        patches = [square[:, top:top + size, left:left + size] for top, left in corners]
        return {"patches": torch.stack(patches), "label": torch.tensor(label),
                "corners": torch.tensor(corners)}

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        return self.classify_parts(head, features_fn, target, "patches")

    def draw(self, image: np.ndarray, prediction: Tensor) -> np.ndarray:
        """The 3x3 layout as text with the predicted neighbour marked."""
        cells = ["o" if index == int(prediction) else "." for index in range(self.num_outputs)]
        layout = "".join(cells[:3]) + "|" + cells[3] + "c" + cells[4] + "|" + "".join(cells[5:])
        return write_text(image, f"rel. position: {layout}")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "self_supervised", "patch_size": self.patch_size,
                "gap": self.gap, "jitter": self.jitter}
