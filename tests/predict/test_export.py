"""``must export``: onnxruntime (CPU) equals PyTorch within 1e-4 for the trunk and the
classification, segmentation, depth and normals heads, at another batch size than traced; the
TorchScript file too; ``export.json`` describes the file and says why detection is left out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from must.cli import main
from must.models.loading import load_model
from must.predict.export import ExportModule, export_model

from .conftest import SIZE, TASK_OPTIONS

ort = pytest.importorskip("onnxruntime")
DENSE_AND_CLASS = ["classification", "segmentation", "depth", "normals"]


def reference(student: Path, input_kind: str, images: torch.Tensor) -> dict[str, np.ndarray]:
    loaded = load_model(student)
    module = ExportModule(loaded, DENSE_AND_CLASS, input_kind, trunk=True).eval()  # type: ignore[arg-type]
    with torch.no_grad():
        return {name: value.numpy() for name, value in zip(module.output_names, module(images))}


@pytest.mark.parametrize("input_kind", ["uint8", "float"])
def test_onnx_equals_pytorch(student: Path, tmp_path: Path, input_kind: str) -> None:
    result = export_model(student, tmp_path, "onnx", input_kind, trunk=True)  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(1)
    if input_kind == "uint8":
        images = torch.randint(0, 256, (3, 3, SIZE, SIZE), dtype=torch.uint8, generator=generator)
    else:
        images = torch.randn(3, 3, SIZE, SIZE, generator=generator)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    got = dict(zip(names, session.run(None, {"images": images.numpy()})))
    expected = reference(student, input_kind, images)
    assert set(DENSE_AND_CLASS) <= set(got) and any(name.startswith("trunk.") for name in got)
    for name, value in expected.items():
        assert got[name].shape == value.shape
        np.testing.assert_allclose(got[name], value, atol=1e-4, rtol=0, err_msg=name)
    # the PyTorch side is the model the Python API runs: same probabilities
    if input_kind == "uint8":
        loaded = load_model(student)
        with torch.no_grad():
            logits = loaded.model(images.float() / 255.0, tasks=["classification"])["classification"]
        np.testing.assert_allclose(got["classification"], logits.softmax(dim=1).numpy(), atol=1e-4)


def test_export_json_and_torchscript(student: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--model", str(student), "--format", "torchscript", "--out", str(tmp_path)]) == 0
    assert "left out detection" in capsys.readouterr().out
    description = json.loads((tmp_path / "export.json").read_text())
    assert description["file"] == "model.pt" and description["image_size"] == SIZE
    assert description["input"]["dtype"] == "uint8"
    assert set(description["tasks"]) == set(DENSE_AND_CLASS)
    assert "bincount" in description["left_out"]["detection"]
    assert description["class_names"]["segmentation"] == TASK_OPTIONS["segmentation"]["class_names"]
    assert set(description["outputs"]) == set(DENSE_AND_CLASS)
    scripted = torch.jit.load(str(tmp_path / "model.pt"))
    images = torch.randint(0, 256, (5, 3, SIZE, SIZE), dtype=torch.uint8)
    expected = reference(student, "uint8", images)
    with torch.no_grad():
        for name, value in zip(description["tasks"], scripted(images)):
            np.testing.assert_allclose(value.numpy(), expected[name], atol=1e-4, err_msg=name)


def test_export_errors(student: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--model", str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["export", "--model", str(student), "--tasks", "detection", "--out", str(tmp_path)]) == 2
    assert "no exportable head" in capsys.readouterr().err


def test_onnx_without_the_export_extra_is_a_clear_error(student: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(__import__("sys").modules, "onnxscript", None)  # as if not installed
    assert main(["export", "--model", str(student), "--out", str(tmp_path)]) == 2
    assert "pip install 'must[export]'" in capsys.readouterr().err
