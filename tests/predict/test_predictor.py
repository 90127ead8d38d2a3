"""``must.load(path).predict(...)``: every input form, every task at the source size, and the one
loader rebuilding teachers, students, transfer cells and checkpoints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import must
from must.config import ConfigError
from must.models import CheckpointError
from must.models.loading import load_model
from must.predict.geometry import fit, unwarp_boxes, unwarp_dense

from .conftest import PHOTO_SIZES, SIZE, TASK_OPTIONS


def shapes_match(prediction: dict, height: int, width: int) -> None:
    assert set(prediction) == set(TASK_OPTIONS)
    assert prediction["classification"].shape == (TASK_OPTIONS["classification"]["num_classes"],)
    assert torch.isclose(prediction["classification"].sum(), torch.tensor(1.0))
    assert prediction["segmentation"].shape == (height, width)
    assert prediction["segmentation"].dtype == torch.int64
    assert prediction["depth"].shape == (height, width)
    assert prediction["normals"].shape == (3, height, width)
    assert torch.allclose(prediction["normals"].norm(dim=0), torch.ones(height, width), atol=1e-4)
    boxes = prediction["detection"]["boxes"]
    assert len(boxes) > 0
    assert (boxes[:, [0, 2]] <= width).all() and (boxes[:, [1, 3]] <= height).all() and (boxes >= 0).all()


def test_predict_on_paths_pil_arrays_and_tensors_at_source_size(student: Path, photos: Path) -> None:
    model = must.load(student)
    paths = sorted(photos.rglob("*.*"))
    by_path = model.predict(paths, batch_size=3)
    assert len(by_path) == len(PHOTO_SIZES)
    for path, prediction in zip(paths, by_path):
        height, width = PHOTO_SIZES[str(path.relative_to(photos).with_suffix(""))]
        shapes_match(prediction, height, width)
    arrays = [np.array(Image.open(path).convert("RGB")) for path in paths]
    for inputs in ([Image.open(path) for path in paths], arrays):
        for first, second in zip(by_path, model.predict(inputs)):
            # same pixels; another batch size may change the last float bits
            assert torch.allclose(first["depth"], second["depth"], atol=1e-5)
            assert torch.allclose(first["classification"], second["classification"], atol=1e-5)
    wide = torch.from_numpy(arrays[paths.index(photos / "a" / "wide.png")]).permute(2, 0, 1)
    batch = torch.stack([wide, wide.flip(-1)]).float() / 255.0
    as_batch = model.predict(batch)
    assert len(as_batch) == 2
    shapes_match(as_batch[0], 40, 72)
    single = model.predict(str(photos / "a" / "wide.png"))[0]
    assert torch.allclose(as_batch[0]["depth"], single["depth"], atol=1e-2)


def test_task_subset_and_unknown_task(student: Path, photos: Path) -> None:
    model = must.load(student, tasks=["depth"])
    assert list(model.predict(photos / "square.png")[0]) == ["depth"]
    with pytest.raises(ConfigError, match="no task\\(s\\) \\['colour'\\].*classification"):
        must.load(student, tasks=["colour"])


def test_bad_inputs_are_clear_errors(student: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        must.load(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="no model record"):
        must.load(tmp_path)
    with pytest.raises(ConfigError, match="uint8 \\[H, W, 3\\]"):
        must.load(student).predict(np.zeros((8, 8, 3), dtype=np.float32))


def test_loader_rebuilds_teacher_transfer_cell_and_checkpoint(student: Path, tmp_path: Path) -> None:
    checkpoint = student / "checkpoint.pt"
    teacher = tmp_path / "as_teacher" / "segmentation"
    teacher.mkdir(parents=True)
    (teacher / "teacher.json").write_text(json.dumps({
        "task": "segmentation", "task_options": TASK_OPTIONS["segmentation"], "image_size": SIZE,
        "model": {"backbone": "resnet18", "width": 0.125, "fpn_channels": 16},
        "checkpoint": str(checkpoint)}))
    loaded = load_model(teacher)
    assert (loaded.kind, list(loaded.tasks)) == ("teacher", ["segmentation"])
    cell = tmp_path / "cell"
    cell.mkdir()
    shutil.copy(checkpoint, cell / "checkpoint.pt")
    (cell / "cell.json").write_text(json.dumps({
        "task": "detection", "downstream": {"task_options": {}, "image_size": 24},
        "model": {"backbone": "resnet18", "width": 0.125, "fpn_channels": 16}}))
    loaded = load_model(cell / "checkpoint.pt")  # the class count is read from the head
    assert loaded.kind == "transfer" and loaded.image_size == 24
    assert loaded.tasks["detection"].num_classes == TASK_OPTIONS["detection"]["num_classes"]
    whole = load_model(checkpoint)
    state = torch.load(checkpoint, weights_only=True)["model"]
    assert all(torch.equal(value, state[key]) for key, value in whole.model.state_dict().items())


def test_a_record_that_does_not_fit_the_checkpoint_is_refused(student: Path, tmp_path: Path) -> None:
    shutil.copy(student / "checkpoint.pt", tmp_path / "checkpoint.pt")
    record = json.loads((student / "student.json").read_text())
    record["tasks"]["segmentation"] = {"num_classes": 4}
    (tmp_path / "student.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="heads.segmentation"):
        load_model(tmp_path)


def test_fit_keeps_the_aspect_ratio_and_unwarp_inverts_it() -> None:
    geometry = fit((40, 80), 32)
    assert geometry.resized_size == (16, 32) and geometry.output_size == (32, 32)
    boxes = torch.tensor([[4.0, 2.0, 20.0, 10.0], [0.0, 0.0, 32.0, 32.0]])
    assert torch.equal(unwarp_boxes(boxes, geometry), torch.tensor([[10.0, 5.0, 50.0, 25.0],
                                                                    [0.0, 0.0, 80.0, 40.0]]))
    window = torch.zeros(32, 32)
    window[:16, :32] = 1.0  # the image's part: no padding (0) may leak into the result
    assert torch.allclose(unwarp_dense(window, geometry), torch.ones(40, 80), atol=1e-6)
    half = unwarp_dense(window[::2, ::2], geometry)  # a head at half the input resolution
    assert half.shape == (40, 80) and torch.allclose(half, torch.ones(40, 80), atol=1e-6)


def test_large_segmentation_is_resized_in_strips_with_interpolate_values(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.nn.functional as F

    from must.predict import geometry as geometry_module

    probabilities = torch.rand(5, 32, 32, generator=torch.Generator().manual_seed(0)).softmax(dim=0)
    geometry = fit((300, 170), 32)
    region = geometry_module.content(probabilities, geometry)
    whole = F.interpolate(region[None], size=(300, 170), mode="bilinear", align_corners=False)[0]
    rows = geometry_module.upsampled_rows(region, (300, 170), 37, 120)
    assert torch.allclose(rows, whole[:, 37:120], atol=1e-6)
    expected = geometry_module.TO_SOURCE_SIZE["segmentation"](probabilities, geometry)
    monkeypatch.setattr(geometry_module, "MAX_ELEMENTS", 5 * 170 * 7)  # strips of 7 rows
    in_strips = geometry_module.TO_SOURCE_SIZE["segmentation"](probabilities, geometry)
    assert in_strips.shape == (300, 170) and torch.equal(in_strips, expected)
