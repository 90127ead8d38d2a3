"""``must predict``: every task's files at each image's source size, COCO results pycocotools
reads against the set's own annotations, resume, and one-line errors for bad inputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

import must
from must.cli import main
from must.data.readers.dense_maps import read_depth, read_normals
from must.world import CATEGORIES

from .conftest import PHOTO_SIZES, TASK_OPTIONS


def predict(*arguments: str) -> int:
    return main(["predict", *map(str, arguments)])


def test_folder_gets_every_task_at_each_source_size(student: Path, photos: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert predict("--model", student, "--data", f"folder:{photos}", "--out", out, "--draw",
                   "depth_npy=true", "batch_size=3") == 0
    assert f"predictions for {len(PHOTO_SIZES)} images" in capsys.readouterr().out
    model = must.load(student)
    for key, (height, width) in PHOTO_SIZES.items():
        segmentation = Image.open(out / f"segmentation/{key}.png")
        assert (segmentation.mode, segmentation.size) == ("P", (width, height))
        assert len(segmentation.getpalette()) >= 3 * TASK_OPTIONS["segmentation"]["num_classes"]
        assert Image.open(out / f"depth/{key}.png").size == (width, height)
        assert np.load(out / f"depth/{key}.npy").shape == (height, width)
        assert read_normals(out / f"normals/{key}.npy", (height, width)).shape == (3, height, width)
        assert Image.open(out / f"normals/{key}.png").size == (width, height)
        assert Image.open(out / f"draw/{key}.png").mode == "RGB"
        # the files hold what the Python API predicts, as our readers read them back
        expected = model.predict(next(photos.glob(f"{key}.*")))[0]
        assert torch.equal(torch.from_numpy(np.array(segmentation)).long(), expected["segmentation"])
        depth = read_depth(out / f"depth/{key}.png", (height, width))
        assert torch.allclose(depth, expected["depth"], atol=5e-4)  # millimetre rounding
        boxes = json.loads((out / f"detection/{key}.json").read_text())
        assert boxes and all(x + w <= width + 1e-3 and y + h <= height + 1e-3 for x, y, w, h
                             in (box["bbox"] for box in boxes))
    images = json.loads((out / "images.json").read_text())
    assert sorted(image["key"] for image in images) == sorted(PHOTO_SIZES)
    detections = json.loads((out / "detections.json").read_text())
    assert {d["image_id"] for d in detections} <= {image["id"] for image in images}
    categories = json.loads((out / "categories.json").read_text())
    assert [c["name"] for c in categories] == list(CATEGORIES)
    lines = (out / "classification.jsonl").read_text().splitlines()
    assert len(lines) == len(PHOTO_SIZES) and len(json.loads(lines[0])["top"]) == 5
    counts = json.loads((out / "predict.json").read_text())["counts"]
    assert counts == {"images": len(PHOTO_SIZES), "predicted_now": len(PHOTO_SIZES), "not_written": 0,
                      "skipped_at_open": 0}
    classes = json.loads((out / "classes.json").read_text())
    assert len(classes["segmentation"]["palette"]) == TASK_OPTIONS["segmentation"]["num_classes"]


def coco_set(root: Path) -> Path:
    """Three non-square images with the COCO ids 101, 7, 55 and category ids 10, 20, ..."""
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    sizes = {101: (30, 50), 7: (64, 40), 55: (33, 33)}
    images, annotations = [], []
    for image_id, (height, width) in sizes.items():
        name = f"{image_id:012d}.jpg"
        pixels = np.random.default_rng(image_id).integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "val2017" / name)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        annotations.append({"id": image_id, "image_id": image_id, "category_id": 20, "iscrowd": 0,
                            "bbox": [2, 3, 10, 12], "area": 120})
    categories = [{"id": 10 * (i + 1), "name": name} for i, name in enumerate(CATEGORIES)]
    path = root / "annotations" / "instances_val2017.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def test_coco_detections_load_against_the_sets_own_annotations(student: Path, tmp_path: Path) -> None:
    annotations = coco_set(tmp_path / "coco")
    out = tmp_path / "out"
    assert predict("--model", student, "--data", f"coco:{tmp_path / 'coco'}", "--out", out,
                   "--tasks", "detection", "data.split=val") == 0
    ground_truth = COCO(str(annotations))
    results = ground_truth.loadRes(str(out / "detections.json"))
    assert results.getImgIds() and set(results.getImgIds()) <= {101, 7, 55}
    assert {a["category_id"] for a in results.dataset["annotations"]} <= set(ground_truth.getCatIds())
    for annotation in results.dataset["annotations"]:
        image = ground_truth.imgs[annotation["image_id"]]
        x, y, width, height = annotation["bbox"]
        assert x + width <= image["width"] + 1e-3 and y + height <= image["height"] + 1e-3
    assert not (out / "segmentation").exists()  # --tasks detection only


def test_a_rerun_skips_written_images(student: Path, photos: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    arguments = ("--model", student, "--data", f"folder:{photos}", "--out", out, "--tasks",
                 "segmentation,classification")
    assert predict(*arguments) == 0
    kept = out / "segmentation/a/tall.png"
    stamp = kept.stat().st_mtime_ns
    os.utime(kept, ns=(stamp - 10**9, stamp - 10**9))
    (out / "classification/a/wide.json").unlink()  # an image cut short by an interruption
    capsys.readouterr()
    assert predict(*arguments) == 0
    assert f"predictions for {len(PHOTO_SIZES)} images in {out} (1 predicted now" in capsys.readouterr().out
    assert kept.stat().st_mtime_ns == stamp - 10**9
    assert len((out / "classification.jsonl").read_text().splitlines()) == len(PHOTO_SIZES)
    assert predict("--model", student, "--data", f"folder:{photos}", "--out", out, "--tasks",
                   "segmentation") == 2  # another run into the same directory


def test_bad_inputs_are_one_line_errors(student: Path, photos: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    cases = {
        ("--model", tmp_path / "missing"): "not found",
        ("--model", student, "--tasks", "detection,colour"): "['colour']",
        ("--model", student, "score_threshold=2"): "score_threshold must be in [0, 1]",
    }
    for arguments, message in cases.items():
        assert predict(*arguments, "--data", f"folder:{photos}", "--out", tmp_path / "out") == 2
        error = capsys.readouterr().err
        assert error.startswith("must predict: error: ") and message in error
        assert error.count("\n") == 1
    bad = tmp_path / "bad"
    bad.mkdir()
    Image.new("RGB", (9, 7)).save(bad / "good.png")
    (bad / "broken.png").write_bytes(b"not a png")
    assert predict("--model", student, "--data", f"folder:{bad}", "--out", tmp_path / "b") == 2
    assert "broken.png" in capsys.readouterr().err
    assert predict("--model", student, "--data", f"folder:{bad}", "--out", tmp_path / "b",
                   "data.skip_bad=true") == 0
    record = json.loads((tmp_path / "b" / "predict.json").read_text())
    assert record["counts"]["skipped_at_open"] == 1 and "broken.png" in record["skipped"][0]["file"]
    assert Image.open(tmp_path / "b" / "segmentation" / "good.png").size == (9, 7)
