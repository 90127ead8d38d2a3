"""Backbones returning C2..C5 at strides 4, 8, 16, 32 (MuST sec. 3.3: "ResNet ... with FPN").

Backbones are picked by name from one explicit family dict:

* ``resnet18`` / ``resnet34`` / ``resnet50`` / ``resnet101`` / ``resnet152``: torchvision's
  ResNet (He et al. 2016). ``width`` < 1 gives a narrow ResNet (every stage and the stem scaled)
  built from torchvision's own blocks, so the embedded demo trains in minutes on a CPU.
* ``timm:<name>``: any timm model. ResNets (``timm:resnet50``, ``timm:seresnet50``...) as below;
  other CNNs (ConvNeXt, EfficientNet, RegNet, MobileNetV3, ResNeSt...) through timm's feature
  levels (:mod:`must.models.timm_backbone`); plain ViTs (ViT, DeiT, DINOv2, EVA) through ViTDet's
  simple feature pyramid (:mod:`must.models.vit`). ``width`` is a torchvision-ResNet option and is
  ignored for timm names (a timm model has the widths its name says).

Weights are always randomly initialized here (never hub downloads); a local weight file is loaded
by :mod:`must.models.weights`. Every backbone keeps the classifier's own parameter names
(``conv1.weight``, ``layer1.0.bn1.weight``...; timm models under ``trunk.``), so torchvision and
timm state dicts map onto it key for key (``classifier_state``).
"""

from __future__ import annotations

import functools
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Union

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from torchvision.models import ResNet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.ops import FrozenBatchNorm2d, stochastic_depth

from must.errors import ConfigError

if TYPE_CHECKING:
    from must.models.timm_backbone import TimmBackbone

Norm = Literal["batch", "group", "frozen_batch"]
LOG = logging.getLogger(__name__)

TORCHVISION_RESNETS: dict[str, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}
"""Block type and blocks per stage, as torchvision's ``resnet18`` ... ``resnet152`` build them."""

TIMM_PREFIX = "timm:"
STAGE_LAYERS = {"layer1": "c2", "layer2": "c3", "layer3": "c4", "layer4": "c5"}


def norm_layer(norm: Norm) -> Callable[..., nn.Module]:
    """``num_channels -> norm module`` (timm also passes ``device`` / ``dtype``)."""
    if norm == "batch":
        return nn.BatchNorm2d
    if norm == "frozen_batch":
        return _frozen_batch_norm
    if norm == "group":
        return _group_norm
    raise ConfigError(f"unknown norm '{norm}'; choose one of: batch, frozen_batch, group")


def _group_norm(channels: int, **factory: object) -> nn.GroupNorm:
    """32 groups (Wu & He 2018) reduced to a divisor of ``channels``: narrow stages have fewer."""
    return nn.GroupNorm(math.gcd(32, channels), channels, **factory)  # type: ignore[arg-type]


def _frozen_batch_norm(channels: int, **_factory: object) -> FrozenBatchNorm2d:
    # FrozenBatchNorm2d takes no device / dtype; its buffers start on the CPU like every model here.
    return FrozenBatchNorm2d(channels)


class NarrowResNet(ResNet):
    """torchvision's ResNet with every channel count (stem included) multiplied by ``width``.

    Reuses torchvision's blocks, ``_make_layer`` and ``forward``; at ``width=1`` it has exactly
    torchvision's parameter names and shapes (tested), so only the channel counts differ.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, int, int, int],
                 width: float, norm: Callable[[int], nn.Module] = nn.BatchNorm2d) -> None:
        nn.Module.__init__(self)  # ResNet.__init__ hard-codes 64..512 channels
        planes = [_scaled(c, width) for c in (64, 128, 256, 512)]
        self._norm_layer = norm
        self.inplanes, self.dilation, self.groups, self.base_width = planes[0], 1, 1, 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, planes[0], layers[0])
        self.layer2 = self._make_layer(block, planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes[3] * block.expansion, 1000)
        for module in self.modules():  # torchvision's initialization
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(module.weight, 1)
                nn.init.constant_(module.bias, 0)


class ResNetBackbone(IntermediateLayerGetter):
    """A ResNet up to ``layer4``; ``forward(images) -> OrderedDict(c2=..., c3=..., c4=..., c5=...)``
    at strides 4, 8, 16, 32. Parameter names are the classifier's (``conv1.weight``...)."""

    def __init__(self, classifier: nn.Module, name: str) -> None:
        children = {child for child, _ in classifier.named_children()}
        if not set(STAGE_LAYERS) <= children:
            raise ConfigError(
                 f"backbone '{name}' is not a ResNet: it has no layer1..layer4 "
                 f"(its top-level modules are {', '.join(sorted(children))})"
             )
        super().__init__(classifier, dict(STAGE_LAYERS))
        self.name = name
        self.stage_channels = _stage_channels(self)

    def classifier_state(self, state: dict[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
        """A torchvision / timm ResNet state dict without its ImageNet classifier ``fc``, and the
        keys left out."""
        kept = {key: value for key, value in state.items() if not key.startswith("fc.")}
        return kept, [f"{key} (classifier)" for key in state if key.startswith("fc.")]

    def parameter_layers(self) -> dict[str, int]:
        """Depth index of every parameter: 0 for the stem, ``i + 1`` for residual unit ``i``."""
        unit_index = {id(unit): index for index, unit in enumerate(self.residual_units(), start=1)}
        layers: dict[str, int] = {}
        for module_name, module in self.named_modules():
            if id(module) in unit_index:
                for name, _ in module.named_parameters():
                    layers[f"{module_name}.{name}"] = unit_index[id(module)]
        return {name: layers.get(name, 0) for name, _ in self.named_parameters()}

    def no_weight_decay(self) -> set[str]:
        """None beyond the optimizer's rule (norm parameters and biases)."""
        return set()

    def residual_units(self) -> list[nn.Module]:
        """Every residual unit (block) of layer1..layer4, in forward order."""
        return [block for layer in STAGE_LAYERS for block in self[layer].children()]

    def forward_with_blocks(self, images: Tensor) -> tuple[OrderedDict[str, Tensor], list[Tensor]]:
        """C2..C5 plus the output of every residual unit, for heads that read a learned
        combination of them (Doersch & Zisserman 2017, sec. 4, "lasso")."""
        outputs: list[Tensor] = []
        handles = [unit.register_forward_hook(lambda _m, _i, out: outputs.append(out))
                   for unit in self.residual_units()]
        try:
            stages = self(images)
        finally:
            for handle in handles:
                handle.remove()
        return stages, outputs


Backbone = Union[ResNetBackbone, "TimmBackbone"]
"""What :class:`~must.models.multitask.MultiTaskModel` holds: ``forward(images) -> C2..C5``,
``stage_channels``, ``classifier_state``, ``parameter_layers`` and ``no_weight_decay``."""


def build_backbone(name: str, width: float = 1.0, norm: Norm = "batch",
                   drop_path_rate: float = 0.0) -> Backbone:
    """A randomly initialized trunk by name (see module docstring).

    ``drop_path_rate``: stochastic depth (Huang et al. 2016), Noisy Student's model noise (Xie et
    al. 2020, sec. 2): the residual branch of block ``i`` of ``n`` is dropped per sample with
    probability ``drop_path_rate * i / (n - 1)`` (timm's linear rule) while training; timm models
    (ViT blocks included) use their own drop-path.
    """
    if not 0.0 <= drop_path_rate < 1.0:
        raise ConfigError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
    if width <= 0:
        raise ConfigError(f"width must be positive, got {width}")
    if name.startswith(TIMM_PREFIX):
        return _timm_backbone(name[len(TIMM_PREFIX):], width, norm, drop_path_rate)
    block, layers = TORCHVISION_RESNETS[_known_torchvision_name(name)]
    if width == 1.0:
        classifier: ResNet = ResNet(block, list(layers), norm_layer=norm_layer(norm))
    else:
        classifier = NarrowResNet(block, layers, width, norm_layer(norm))
    backbone = ResNetBackbone(classifier, name)
    if drop_path_rate > 0:
        add_stochastic_depth(backbone.residual_units(), drop_path_rate)
    return backbone


def check_backbone_name(name: str) -> None:
    """Fails, listing the valid names, when ``name`` is neither a torchvision ResNet nor a timm model."""
    if name.startswith(TIMM_PREFIX):
        import timm  # imported here: importing timm takes seconds, and most runs never need it

        if not timm.is_model(name[len(TIMM_PREFIX):]):
            raise ConfigError(f"unknown timm model '{name[len(TIMM_PREFIX):]}' (backbone '{name}')")
        return
    _known_torchvision_name(name)


def add_stochastic_depth(units: list[nn.Module], drop_path_rate: float) -> list[RemovableHandle]:
    """Stochastic depth for torchvision blocks, which lack it: a forward hook on each block's last
    norm layer (``bn2`` of a BasicBlock, ``bn3`` of a Bottleneck) drops the residual branch per
    sample right before it is added to the shortcut, as timm's blocks do, without renaming any
    parameter (so weight files still load)."""
    handles = []
    for index, unit in enumerate(units):
        rate = drop_path_rate * index / max(len(units) - 1, 1)
        last_norm = unit.bn3 if hasattr(unit, "bn3") else unit.bn2
        if rate > 0:
            handles.append(last_norm.register_forward_hook(functools.partial(_drop_branch, rate)))
    return handles


def _drop_branch(rate: float, module: nn.Module, _inputs: tuple[Tensor, ...], output: Tensor) -> Tensor:
    return stochastic_depth(output, rate, mode="row", training=module.training)


def _timm_backbone(model_name: str, width: float, norm: Norm, drop_path_rate: float) -> Backbone:
    import timm  # imported here: importing timm takes seconds, and most runs never need it

    from must.models.timm_backbone import TimmBackbone, convert_norms
    from must.models.vit import VIT_MODULES, VisionTransformerBackbone

    if not timm.is_model(model_name):
        raise ConfigError(f"unknown timm model '{model_name}'")
    name = TIMM_PREFIX + model_name
    if width != 1.0:
        _note_width_ignored(name, width)
    if timm.models.is_model_in_modules(model_name, ["resnet"]):
        return ResNetBackbone(_timm_resnet(model_name, norm, drop_path_rate), name)
    is_vit = timm.models.is_model_in_modules(model_name, list(VIT_MODULES))
    if is_vit and norm != "batch":
        raise ConfigError(f"model.norm={norm}: backbone '{name}' is a ViT and keeps its LayerNorms; "
                          f"use norm=batch")
    options: dict[str, object] = {"dynamic_img_size": True, "dynamic_img_pad": True} if is_vit else {}
    if drop_path_rate > 0:
        options["drop_path_rate"] = drop_path_rate
    try:
        trunk = timm.create_model(model_name, pretrained=False, **options)
    except TypeError as error:  # a model whose constructor lacks one of the options
        raise ConfigError(f"timm cannot build '{model_name}' with {sorted(options)}: {error}") from None
    if is_vit:
        return VisionTransformerBackbone(trunk, name)
    return TimmBackbone(convert_norms(trunk, norm, name), name)


@functools.cache
def _note_width_ignored(name: str, width: float) -> None:
    LOG.info("model.width=%s applies to torchvision ResNets only: ignored for '%s' (timm builds the "
             "widths its name says)", width, name)


def _timm_resnet(model_name: str, norm: Norm, drop_path_rate: float) -> nn.Module:
    import timm

    options: dict[str, object] = {}
    if norm == "frozen_batch":
        # timm zeroes each block's last norm weight at init; frozen, it would stay zero and
        # silence every residual branch until a weight file is loaded.
        options["zero_init_last"] = False
    return timm.create_model(model_name, pretrained=False, drop_path_rate=drop_path_rate,
                             norm_layer=norm_layer(norm), **options)


def _stage_channels(backbone: IntermediateLayerGetter) -> tuple[int, ...]:
    """Channels of C2..C5, read from one tiny forward pass (block types vary across timm models)."""
    was_training = backbone.training
    backbone.eval()
    try:
        with torch.no_grad():
            stages = backbone(torch.zeros(1, 3, 64, 64))
    finally:
        backbone.train(was_training)
    return tuple(int(stage.shape[1]) for stage in stages.values())


def _known_torchvision_name(name: str) -> str:
    if name not in TORCHVISION_RESNETS:
        raise ConfigError(f"unknown backbone '{name}'; choose one of: {', '.join(TORCHVISION_RESNETS)}, "
                        f"or '{TIMM_PREFIX}<timm model name>'")
    return name


def _scaled(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))
