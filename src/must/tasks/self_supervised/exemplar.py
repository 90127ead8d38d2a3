"""Exemplar networks: instance discrimination by classification (Dosovitskiy et al. 2014,
"Discriminative Unsupervised Feature Learning with Convolutional Neural Networks").

Every image is its own "surrogate class" (sec. 2): the network sees randomly transformed copies of
it (translation and scaling via a random resized crop, rotation up to 20 degrees, contrast /
brightness / saturation / hue changes, sec. 2.1) and learns to say which image they came from.

* views:  ``views_per_image`` independent transformations and the image's surrogate class, its
          position in the training set: one class per image, as in the paper (``num_instances``
          must be at least the number of training images; fewer classes are refused, never shared).
* head:   pooled C5 -> MLP -> ``num_instances`` logits; cross-entropy.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.transforms import v2

from must.data.sample import TaskBatch
from must.models.features import Features, FeatureSpec
from must.tasks.self_supervised.base import (
    FeaturesFn,
    PretextClassificationTask,
    check_instance_count,
    instance_index,
    mlp,
    pooled_c5,
    present_views,
    seeded,
    to_unit,
)


def exemplar_transform(size: int) -> v2.Compose:
    """Dosovitskiy et al. sec. 2.1's families of transformations, on ``uint8`` tensors."""
    return v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.25, 1.0), ratio=(0.7, 1.4), antialias=True),
        v2.RandomRotation(20),
        v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1),
    ])


class ExemplarHead(nn.Module):
    reads_pyramid = False  # pooled C5 only: the model need not run the FPN for it

    def __init__(self, in_channels: int, hidden: int, num_instances: int) -> None:
        super().__init__()
        self.classifier = mlp([in_channels, hidden, num_instances])

    def forward(self, features: Features, target: TaskBatch | None = None) -> Tensor:
        return self.classifier(pooled_c5(features))


class ExemplarTask(PretextClassificationTask):
    name = "exemplar"

    def __init__(self, view_size: int = 64, num_instances: int = 4096, views_per_image: int = 2,
                 hidden_dim: int = 512) -> None:
        self.view_size = view_size
        self.num_outputs = num_instances
        self.views_per_image = views_per_image
        self.hidden_dim = hidden_dim
        self.transform = exemplar_transform(view_size)

    def build_head(self, spec: FeatureSpec) -> ExemplarHead:
        return ExemplarHead(spec.c5_channels, self.hidden_dim, self.num_outputs)

    def check_dataset_size(self, count: int) -> None:
        check_instance_count(count, self.num_outputs, self.name, "num_instances")

    def make_views(self, image: Tensor, generator: torch.Generator,
                   index: int | None = None) -> dict[str, Tensor]:
        """``{"images": uint8 [V, 3, s, s], "instance": int64 []}``; needs the sample's ``index``."""
        instance = instance_index(index, self.num_outputs, self.name, "num_instances")
        with seeded(generator):
            views = torch.stack([self.transform(image) for _ in range(self.views_per_image)])
        return {"images": views, "instance": torch.tensor(instance)}

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        views = present_views(target)
        if views is None:
            return None
        images = views["images"]
        logits = head(features_fn(to_unit(images.flatten(0, 1))))
        labels = views["instance"].repeat_interleave(images.shape[1])
        return {"logits": logits, "labels": labels}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "self_supervised", "num_instances": self.num_outputs}
