"""ResNet-FPN multi-task models (MuST sec. 3.3): backbone, pyramid, heads, weight loading."""

from must.models.backbone import ResNetBackbone, build_backbone
from must.models.config import ModelConfig, demo_model
from must.models.features import Features, FeatureSpec
from must.models.fpn import FeaturePyramid
from must.models.multitask import MultiTaskModel, build_model, feature_spec
from must.models.weights import (
    CheckpointError,
    LoadReport,
    load_backbone,
    load_checkpoint,
    load_initial_weights,
)

__all__ = [
    "CheckpointError",
    "FeaturePyramid",
    "FeatureSpec",
    "Features",
    "LoadReport",
    "ModelConfig",
    "MultiTaskModel",
    "ResNetBackbone",
    "build_backbone",
    "build_model",
    "demo_model",
    "feature_spec",
    "load_backbone",
    "load_checkpoint",
    "load_initial_weights",
]
