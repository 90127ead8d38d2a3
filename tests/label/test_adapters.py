"""Existing models as teachers: torchvision classification / detection / segmentation and timm
classifiers with random weights saved to a local file, compared with running the library model
directly; class mappings (merge, drop); bad weights; an adapter directory in a labeling run."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision

from must.data.readers import DatasetConfig
from must.label import LabelConfig, PseudoLabels, TeacherError, label_dataset
from must.label.adapters import AdapterSpec, ClassMapping, build_adapter, save_adapter_spec
from must.label.open_teacher import load_labeling_teacher
from must.models.config import IMAGENET_MEAN, IMAGENET_STD

MODEL_CLASSES = ("cat", "dog", "car")
OURS = ("animal", "vehicle", "person")
CLASS_MAP = {"cat": "animal", "dog": "animal", "car": "vehicle"}


def _normalized(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def _save(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def _merge(probabilities: torch.Tensor) -> torch.Tensor:
    """cat + dog -> animal, car -> vehicle, nothing -> person (reference for the mapping)."""
    animal = probabilities[:, 0] + probabilities[:, 1]
    return torch.stack([animal, probabilities[:, 2], torch.zeros_like(animal)], dim=1)


def test_class_mapping_merges_drops_and_refuses_unknown_names() -> None:
    mapping = ClassMapping.build(MODEL_CLASSES, OURS, CLASS_MAP)
    assert mapping.index == (0, 0, 1)
    probabilities = torch.tensor([[0.2, 0.3, 0.5]])
    torch.testing.assert_close(mapping.merge(probabilities), torch.tensor([[0.5, 0.5, 0.0]]))
    labels, keep = mapping.labels(torch.tensor([2, 0, -1, 3]))
    assert labels.tolist() == [1, 0, -1, -1] and keep.tolist() == [True, True, False, False]
    partial = ClassMapping.build(("a", "b", "c"), ("b", "c"))  # same names map, "a" is dropped
    assert partial.index == (-1, 0, 1) and partial.describe()["dropped"] == ["a"]
    with pytest.raises(TeacherError, match="does not have"):
        ClassMapping.build(MODEL_CLASSES, OURS, {"horse": "animal"})
    with pytest.raises(TeacherError, match="not among our classes"):
        ClassMapping.build(MODEL_CLASSES, OURS, {"cat": "feline"})
    with pytest.raises(TeacherError, match="maps to any"):
        ClassMapping.build(MODEL_CLASSES, ("x",))


@pytest.mark.parametrize("family", ["torchvision_classification", "timm_classification"])
def test_classifiers(family: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    if family.startswith("timm"):
        model = timm.create_model("resnet18", pretrained=False, num_classes=3)
        mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    else:
        model = torchvision.models.resnet18(weights=None, num_classes=3)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    weights = _save(model.eval(), tmp_path / "weights.pt")
    teacher = build_adapter(AdapterSpec(family, "resnet18", str(weights), MODEL_CLASSES, OURS,
                                        CLASS_MAP, input_size=32))
    assert teacher.task.name == "classification" and teacher.class_names == list(OURS)
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = _merge(F.softmax(model(_normalized(images, mean, std)), dim=1))
        predictions = teacher.predict(images)
    torch.testing.assert_close(torch.stack(predictions), expected)
    label = teacher.task.to_pseudo_label(predictions[0])
    assert label[2] == 0 and float(label.sum()) == pytest.approx(1.0)


DETECTORS = [
    ("fasterrcnn_mobilenet_v3_large_fpn", {}),
    pytest.param("fasterrcnn_resnet50_fpn_v2", {}, marks=pytest.mark.slow),
    pytest.param("retinanet_resnet50_fpn", {"score_thresh": 0.0}, marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("architecture", "extra"), DETECTORS)
def test_torchvision_detector(architecture: str, extra: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    options = {"min_size": 64, "max_size": 64, **extra}
    model = torchvision.models.get_model(architecture, weights=None, weights_backbone=None,
                                         num_classes=4, **options).eval()
    weights = _save(model, tmp_path / "detector.pt")
    spec = AdapterSpec("torchvision_detection", architecture, str(weights), MODEL_CLASSES,
                       ("vehicle", "animal"), {"cat": "animal", "car": "vehicle"}, input_size=64,
                       options=options)
    teacher = build_adapter(spec)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(list(images))
        predictions = teacher.predict(images)
    for raw, ours in zip(expected, predictions):
        assert len(raw["labels"]) > 0
        keep = (raw["labels"] == 1) | (raw["labels"] == 3)  # cat -> animal, car -> vehicle, dog dropped
        assert torch.equal(ours["boxes"], raw["boxes"][keep])
        assert torch.equal(ours["scores"], raw["scores"][keep])
        assert ours["labels"].tolist() == [1 if label == 1 else 0 for label in raw["labels"][keep].tolist()]
        pseudo = teacher.task.to_pseudo_label(ours, 0.0)
        assert len(pseudo["boxes"]) == int(keep.sum())


@pytest.mark.parametrize("architecture", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_torchvision_segmenter(architecture: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    extra = {"aux_loss": True} if architecture.startswith("deeplab") else {}
    model = torchvision.models.get_model(architecture, weights=None, weights_backbone=None,
                                         num_classes=3, **extra).eval()
    weights = _save(model, tmp_path / "segmenter.pt")  # deeplab's aux head: detected from the file
    teacher = build_adapter(AdapterSpec("torchvision_segmentation", architecture, str(weights),
                                        MODEL_CLASSES, OURS, CLASS_MAP, input_size=48))
    images = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        expected = _merge(F.softmax(model(_normalized(images))["out"], dim=1))
        predictions = teacher.predict(images)
    torch.testing.assert_close(torch.stack(predictions), expected)
    label = teacher.task.to_pseudo_label(predictions[0])
    assert label.shape == (48, 48) and not bool((label == 2).any())  # nothing maps to "person"


def test_weights_that_do_not_fit_are_named(tmp_path: Path) -> None:
    weights = _save(torchvision.models.resnet18(weights=None, num_classes=5), tmp_path / "five.pt")
    spec = AdapterSpec("torchvision_classification", "resnet18", str(weights), MODEL_CLASSES)
    with pytest.raises(TeacherError, match="five.pt: does not fit .* 3 outputs"):
        build_adapter(spec)
    with pytest.raises(TeacherError, match="not a torchvision detection model"):
        build_adapter(AdapterSpec("torchvision_detection", "resnet18", str(weights), MODEL_CLASSES))
    with pytest.raises(TeacherError, match="no such weight file"):
        build_adapter(AdapterSpec("torchvision_classification", "resnet18", "missing.pt", MODEL_CLASSES))


def test_adapter_directory_labels_a_dataset(world: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    (tmp_path / "tv").mkdir()
    _save(torchvision.models.resnet18(weights=None, num_classes=3), tmp_path / "tv" / "w.pt")
    save_adapter_spec(AdapterSpec("torchvision_classification", "resnet18", "w.pt", MODEL_CLASSES,
                                  name="tv-resnet18", input_size=32), tmp_path / "tv")
    teacher = load_labeling_teacher(f"classification={tmp_path / 'tv'}", torch.device("cpu"))
    assert teacher.name == "tv-resnet18"
    config = LabelConfig(teachers=(str(tmp_path / "tv"),),
                         data=DatasetConfig("folder", str(world / "images"), limit=8), workers=0)
    labels = PseudoLabels(label_dataset(config, tmp_path / "out").parent)
    entry = labels.manifest.teachers[0]
    assert entry.kind == "torchvision_classification" and entry.details["architecture"] == "resnet18"
    assert entry.class_names == list(MODEL_CLASSES) and entry.checkpoint.endswith("w.pt")
    assert labels.get(labels.keys[0])["classification"].shape == (3,)
