"""``must label`` on CUDA (MuST sec. 3.2) gives the CPU's pseudo labels: within float rounding in
fp32, within bf16's rounding under ``precision=auto`` (bf16 on GPUs that compute it natively).

The teachers are the labeler tests' random-weight ones: their detection scores stay below 0.5 and
their segmentation probabilities below the 0.5 rule, so the thresholds are lowered (0.3 for
boxes, 0 = plain argmax for segmentation) to compare labels that exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from must.data.readers import DatasetConfig
from must.world import generate

from .conftest import CUDA_GROUP, SIZE, label_on, tiny_teachers, unmatched_boxes

pytestmark = [pytest.mark.cuda, pytest.mark.xdist_group(CUDA_GROUP)]

THRESHOLDS = {"detection": 0.3, "segmentation": 0.0}
FP32 = {"probability": 1e-4, "depth": 1e-4, "pixels": 0.999, "box_margin": 0.01, "box_iou": 0.95}
"""TF32 off, so CUDA and CPU differ by summation order only (~1e-6 relative)."""
BF16 = {"probability": 5e-3, "depth": 3e-2, "pixels": 0.9, "box_margin": 0.05, "box_iou": 0.5}
"""On the CPU the same labels in bf16 differed from fp32 by 3e-4 (probabilities) and 0.4% of the
depth range, kept 96% of the argmax pixels, and matched every box scoring 0.05 above the threshold
at IoU 0.5 (random teachers have many near-ties); these bounds leave 3-15x room."""


@pytest.fixture(scope="module")
def pool_images(tmp_path_factory: pytest.TempPathFactory) -> DatasetConfig:
    root = generate("pool", tmp_path_factory.mktemp("cuda_pool"), count=40, size=SIZE, seed=0, progress=False)
    return DatasetConfig(format="folder", root=str(root / "images"))


@pytest.fixture(scope="module")
def cpu_labels(pool_images: DatasetConfig, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """(teacher directories, the CPU's fp32 labels)."""
    root = tmp_path_factory.mktemp("cuda_labeling")
    teachers = tiny_teachers(root / "teachers")
    return teachers, label_on(pool_images, teachers, root / "cpu", "cpu", "fp32", THRESHOLDS)


def test_fp32_labels_on_cuda_equal_the_cpu_labels(cuda_device: torch.device, pool_images: DatasetConfig,
                                                  cpu_labels: tuple[dict, dict], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # TF32 keeps 10 bits: not fp32
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    teachers, reference = cpu_labels
    labels = label_on(pool_images, teachers, tmp_path, str(cuda_device), "fp32", THRESHOLDS)
    assert_close_labels(reference, labels, FP32)


def test_auto_precision_labels_on_cuda_are_close_to_the_cpu_labels(cuda_device: torch.device,
                                                                   pool_images: DatasetConfig,
                                                                   cpu_labels: tuple[dict, dict],
                                                                   tmp_path: Path) -> None:
    teachers, reference = cpu_labels
    labels = label_on(pool_images, teachers, tmp_path, str(cuda_device), "auto", THRESHOLDS)
    assert_close_labels(reference, labels, BF16)


def assert_close_labels(reference: dict[str, dict[str, Any]], labels: dict[str, dict[str, Any]],
                        tolerance: dict[str, float]) -> None:
    assert labels.keys() == reference.keys() and len(labels) == 40
    agreement = []
    for key, expected in reference.items():
        actual = labels[key]
        assert actual.keys() == expected.keys() == {"classification", "detection", "segmentation", "depth"}
        assert (actual["classification"] - expected["classification"]).abs().max() <= tolerance["probability"], key
        depth_range = expected["depth"].abs().max()
        assert (actual["depth"] - expected["depth"]).abs().max() <= tolerance["depth"] * depth_range, key
        assert actual["segmentation"].shape == expected["segmentation"].shape == (SIZE, SIZE)
        agreement.append(float((actual["segmentation"] == expected["segmentation"]).float().mean()))
        score = THRESHOLDS["detection"] + tolerance["box_margin"]  # clear of the threshold
        for first, second in ((expected, actual), (actual, expected)):
            assert unmatched_boxes(first["detection"], second["detection"], score, tolerance["box_iou"]) == 0, key
    assert sum(agreement) / len(agreement) >= tolerance["pixels"], agreement
