"""DINO, self-distillation with no labels (Caron et al. 2021, "Emerging Properties in
Self-Supervised Vision Transformers"), with our ResNet-FPN trunk.

* views:  multi-crop (sec. 3.1, Caron et al. 2020): two global crops (``view_size``, scale
          0.4-1) and ``local_crops`` small ones (``local_size``, scale 0.05-0.4), each with the
          SimCLR family of colour augmentations. At our sizes: 64 px global, 32 px local.
* head:   student projection (3-layer MLP with BN as for ResNets, L2-normalized bottleneck,
          weight-normalized last layer with its norm fixed; the layout of lightly's
          ``DINOProjectionHead``, sec. 3.1), teacher = momentum copy of backbone and projection
          (:mod:`.momentum`, ``0.996`` cosine to 1).
* loss:   sec. 3.1 eq. 2 and Algorithm 1: ``sum_{x in global} sum_{x' != x} H(P_t(x), P_s(x'))``
          averaged over the pairs and the batch, ``P_t = softmax((g_t(x) - C) / tau_t)`` (teacher
          centred and sharpened, ``tau_t = 0.04``), ``P_s = softmax(g_s / tau_s)`` (``tau_s = 0.1``);
          the centre ``C <- m C + (1 - m) mean(g_t)`` (``m = 0.9``, eq. 4) over the global batch
          after each training pass, a buffer of the head (checkpointed). Equal to lightly's
          ``DINOLoss`` (tested).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import ProjectionHead
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from must import distributed
from must.data.sample import TaskBatch
from must.errors import ConfigError
from must.models.features import FeatureSpec
from must.tasks.self_supervised.base import FeaturesFn, present_views, seeded, to_unit
from must.tasks.self_supervised.momentum import MomentumHead, check_momentum
from must.tasks.self_supervised.two_views import TwoViewTask, simclr_transform, start_momentum_target


class DINOProjection(ProjectionHead):
    """lightly's ``DINOProjectionHead`` layout (MLP, L2 normalization, weight-normalized linear
    layer with ``g = 1`` fixed), with torch's parametrization weight norm: the deprecated
    ``torch.nn.utils.weight_norm`` lightly uses cannot be deep-copied, and the momentum teacher
    and the engine's weight average are deep copies."""

    def __init__(self, input_dim: int, hidden_dim: int, bottleneck_dim: int, output_dim: int) -> None:
        super().__init__([(input_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.GELU()),
                          (hidden_dim, hidden_dim, nn.BatchNorm1d(hidden_dim), nn.GELU()),
                          (hidden_dim, bottleneck_dim, None, None)])
        for module in self.modules():
            if isinstance(module, nn.Linear):  # DINO's truncated normal initialization
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        self.last_layer = parametrizations.weight_norm(nn.Linear(bottleneck_dim, output_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        magnitude.data.fill_(1.0)
        magnitude.requires_grad = False

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.layers(x), dim=-1))


class DINOHead(MomentumHead):
    """:class:`MomentumHead` (student projection, momentum teacher) plus the centre ``C``."""

    def __init__(self, projection: nn.Module, base_momentum: float, final_momentum: float,
                 output_dim: int, center_momentum: float) -> None:
        super().__init__(projection, None, base_momentum, final_momentum)
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, output_dim))

    @torch.no_grad()
    def update_center(self, teacher: Tensor) -> None:
        """``C <- m C + (1 - m) mean(teacher outputs)`` over every rank's rows (DINO eq. 4; a
        collective under DDP: every rank calls it, with or without rows)."""
        rows = teacher.reshape(-1, teacher.shape[-1]).float()
        total = torch.cat([rows.sum(dim=0), rows.new_tensor([rows.shape[0]])])
        total = distributed.all_reduce_mean(total)  # the mean of sums: the ratio is what counts
        if float(total[-1]) > 0:
            mean = total[:-1] / total[-1]
            self.center.mul_(self.center_momentum).add_(mean[None], alpha=1 - self.center_momentum)


def dino_loss(teacher_probabilities: Tensor, student: Tensor, student_temperature: float) -> Tensor:
    """``teacher_probabilities``: ``[T, B, K]`` (centred, sharpened, no gradient); ``student``:
    ``[S, B, K]`` logits, its first ``T`` views the same global crops. Mean of ``H(P_t, P_s)`` over
    the pairs of different views and the batch (DINO Algorithm 1)."""
    log_student = F.log_softmax(student.float() / student_temperature, dim=-1)
    cross = -torch.einsum("tbk,sbk->ts", teacher_probabilities, log_student)
    cross.fill_diagonal_(0)
    pairs = cross.numel() - min(cross.shape)
    return cross.sum() / (pairs * student.shape[1])


class DINOTask(TwoViewTask):
    name = "dino"

    def __init__(self, view_size: int = 64, local_size: int = 32, local_crops: int = 4,
                 output_dim: int = 1024, hidden_dim: int = 512, bottleneck_dim: int = 64,
                 teacher_temperature: float = 0.04, student_temperature: float = 0.1,
                 center_momentum: float = 0.9, base_momentum: float = 0.996, final_momentum: float = 1.0,
                 color_strength: float = 0.5) -> None:
        if teacher_temperature <= 0 or student_temperature <= 0:
            raise ConfigError("teacher_temperature and student_temperature must be positive, got "
                              f"{teacher_temperature} and {student_temperature}")
        if local_crops < 0:
            raise ConfigError(f"local_crops must be >= 0, got {local_crops}")
        check_momentum(base_momentum, final_momentum)
        super().__init__(view_size, color_strength, True, (0.4, 1.0))
        self.local_size, self.local_crops = local_size, local_crops
        self.local_transform = simclr_transform(local_size, color_strength, True, (0.05, 0.4))
        self.projection_dim, self.hidden_dim, self.bottleneck_dim = output_dim, hidden_dim, bottleneck_dim
        self.teacher_temperature, self.student_temperature = teacher_temperature, student_temperature
        self.center_momentum = center_momentum
        self.base_momentum, self.final_momentum = base_momentum, final_momentum

    def build_head(self, spec: FeatureSpec) -> DINOHead:
        projection = DINOProjection(spec.c5_channels, self.hidden_dim, self.bottleneck_dim, self.projection_dim)
        return DINOHead(projection, self.base_momentum, self.final_momentum, self.projection_dim,
                        self.center_momentum)

    def make_views(self, image: Tensor, generator: torch.Generator,
                   index: int | None = None) -> dict[str, Tensor]:
        """``{"views": uint8 [2, 3, G, G], "local": uint8 [L, 3, l, l]}`` (L = 0: an empty stack)."""
        with seeded(generator):
            views = torch.stack([self.transform(image), self.transform(image)])
            local = [self.local_transform(image) for _ in range(self.local_crops)]
        empty = torch.zeros(0, 3, self.local_size, self.local_size, dtype=torch.uint8)
        return {"views": views, "local": torch.stack(local) if local else empty}

    def forward_views(self, head: nn.Module, features_fn: FeaturesFn,
                      target: TaskBatch | None) -> dict[str, Tensor] | None:
        start_momentum_target(head)
        views = present_views(target)
        if views is None:
            if distributed.is_initialized() and head.training:  # join the centre's all-reduce
                head.update_center(head.center.new_zeros(0, self.projection_dim))
            return None
        crops = to_unit(views["views"])  # [B, 2, 3, G, G]
        count = crops.shape[0]
        first, second = self.online(head, features_fn, crops[:, 0], crops[:, 1])
        student = [first, second]
        if self.local_crops:
            local = head(features_fn(to_unit(views["local"]).transpose(0, 1).flatten(0, 1)))
            student.extend(local.view(self.local_crops, count, -1).unbind(0))
        with torch.no_grad():
            teacher = head.target_embed(torch.cat([crops[:, 0], crops[:, 1]])).float().view(2, count, -1)
            probabilities = F.softmax((teacher - head.center) / self.teacher_temperature, dim=-1)
            if head.training:
                head.update_center(teacher)
        return {"first": first, "second": second, "student": torch.stack(student), "teacher": probabilities}

    def view_loss(self, output: dict[str, Tensor]) -> dict[str, Tensor]:
        """DINO eq. 2 over the two global crops (teacher) and every crop (student)."""
        return {"loss": dino_loss(output["teacher"], output["student"], self.student_temperature)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "output_dim": self.projection_dim, "local_crops": self.local_crops}
