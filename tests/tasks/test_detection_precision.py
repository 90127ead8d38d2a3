"""Detection under bf16 autocast: given the same head outputs, boxes equal the fp32 ones.

bf16 keeps 8 significant bits, so a coordinate in [256, 512) decoded in bf16 lands on a 2-pixel
grid. The four output layers of the RPN and the Fast R-CNN predictor are replaced by stand-ins
that return fixed values (exactly representable in bf16, in the dtype autocast gives a
convolution or linear layer), so both runs see the same head outputs and any difference comes
from how boxes are decoded, filtered and post-processed.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import Tensor, nn

from must.models.features import Features, FeatureSpec
from must.tasks.detection import DetectionTask

SIZE = 640
SPEC = FeatureSpec(c5_channels=8, fpn_channels=8)


class FixedOutput(nn.Module):
    """Stands in for a convolution or linear layer: seeded values of the shape that layer would
    give (``channels`` outputs), rounded to bf16, in the dtype autocast would give it."""

    def __init__(self, channels: int, scale: float, offset: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        self.channels, self.scale, self.offset, self.seed = channels, scale, offset, seed

    def forward(self, x: Tensor) -> Tensor:
        shape = (x.shape[0], self.channels, *x.shape[2:])
        generator = torch.Generator().manual_seed(self.seed + sum(shape))
        values = (torch.randn(shape, generator=generator) * self.scale + self.offset).bfloat16()
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        return values.to(dtype)


def head_with_fixed_outputs() -> nn.Module:
    task = DetectionTask(3, representation_size=16, rpn_pre_nms_top_n=300, rpn_post_nms_top_n=100)
    head = task.build_head(SPEC).eval()
    anchors = head.rpn.anchor_generator.num_anchors_per_location()[0]
    head.rpn.head.cls_logits = FixedOutput(anchors, scale=2.0, seed=1)
    head.rpn.head.bbox_pred = FixedOutput(4 * anchors, scale=0.3, seed=2)
    head.roi_heads.box_predictor.cls_score = FixedOutput(task.num_classes + 1, scale=2.0, offset=0.5, seed=3)
    head.roi_heads.box_predictor.bbox_pred = FixedOutput(4 * (task.num_classes + 1), scale=0.5, seed=4)
    return head


def detect(head: nn.Module, features: Features, bf16: bool) -> list[dict[str, Tensor]]:
    """The head in eval mode as the engine runs it; under autocast the trunk would hand over a
    bf16 pyramid, so the pyramid is cast as well."""
    if bf16:
        features = Features(features.image_size, features.stages,
                            type(features.pyramid)((k, v.bfloat16()) for k, v in features.pyramid.items()))
    context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), context:
        return head(features)["detections"]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bf16_autocast_detections_equal_fp32_given_the_same_head_outputs() -> None:
    head = head_with_fixed_outputs()
    features = Features.random(SPEC, 2, (SIZE, SIZE), torch.Generator().manual_seed(0))
    exact, autocast = detect(head, features, bf16=False), detect(head, features, bf16=True)
    assert sum(len(d["boxes"]) for d in exact) > 20
    assert any(float(d["boxes"].max()) > 256 for d in exact)  # boxes where bf16's grid is 2 px or more
    for fp32, bf16 in zip(exact, autocast):
        assert bf16["boxes"].shape == fp32["boxes"].shape
        torch.testing.assert_close(bf16["boxes"].float(), fp32["boxes"], rtol=0.0, atol=1e-3)
        torch.testing.assert_close(bf16["scores"].float(), fp32["scores"], rtol=0.0, atol=1e-6)
        assert torch.equal(bf16["labels"], fp32["labels"])
        assert bf16["boxes"].dtype == torch.float32 and bf16["scores"].dtype == torch.float32
