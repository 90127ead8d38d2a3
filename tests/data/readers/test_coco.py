"""COCO detection JSON: boxes cross-checked against pycocotools' own loader; bad annotations."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO

from must.data.readers import CocoDetection, DataError, DataWarning, DatasetConfig, open_dataset

SIZES = {1: (40, 60), 2: (30, 30), 7: (50, 20)}  # image id -> (height, width)


def tiny_coco(root: Path) -> Path:
    """Three images in ``root/val2017`` and ``root/annotations/instances_val2017.json``."""
    images = []
    for image_id, (height, width) in SIZES.items():
        name = f"{image_id:012d}.png"
        (root / "val2017").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((height, width, 3), image_id, np.uint8)).save(root / "val2017" / name)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 5, "bbox": [1.5, 2.0, 10.0, 20.0], "iscrowd": 0},
        {"id": 11, "image_id": 1, "category_id": 1, "bbox": [0, 0, 60, 40], "iscrowd": 0},
        {"id": 12, "image_id": 1, "category_id": 3, "bbox": [5, 5, 5, 5], "iscrowd": 1},
        {"id": 13, "image_id": 7, "category_id": 3, "bbox": [2, 30, 18, 19.5], "iscrowd": 0},
    ]  # image 2 has no objects: still a labeled image, with an empty box set
    categories = [{"id": 5, "name": "five"}, {"id": 1, "name": "one"}, {"id": 3, "name": "three"}]
    path = root / "annotations" / "instances_val2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": categories}))
    return path


def test_boxes_match_pycocotools(tmp_path: Path) -> None:
    path = tiny_coco(tmp_path)
    dataset = open_dataset(DatasetConfig("coco", str(tmp_path), split="val"))
    coco = COCO(str(path))
    category_ids = sorted(coco.getCatIds())
    assert dataset.classes["detection"] == [coco.cats[i]["name"] for i in category_ids]
    assert len(dataset) == len(coco.getImgIds())
    for index, image_id in enumerate(sorted(coco.getImgIds())):
        sample = dataset[index]
        info = coco.loadImgs(image_id)[0]
        assert sample.key == Path(info["file_name"]).stem
        assert sample.size == (info["height"], info["width"])
        expected = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False))
        xyxy = [[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in expected)]
        target = sample.targets["detection"]
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        assert target["boxes"].shape == (len(expected), 4)
        assert torch.allclose(target["boxes"], torch.tensor(xyxy, dtype=torch.float32).reshape(-1, 4))
        assert target["labels"].tolist() == [category_ids.index(a["category_id"]) for a in expected]


def test_slight_overshoot_is_clipped_and_empty_boxes_dropped(tmp_path: Path) -> None:
    path = tiny_coco(tmp_path)
    data = json.loads(path.read_text())
    data["annotations"] = [
        {"id": 1, "image_id": 2, "category_id": 1, "bbox": [-0.4, 10, 30.6, 5], "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [3, 3, 0, 4], "iscrowd": 0},
    ]
    path.write_text(json.dumps(data))
    dataset = CocoDetection(path, tmp_path / "val2017")
    boxes = dataset[dataset.keys.index("000000000002")].targets["detection"]["boxes"]
    assert boxes.tolist() == [[0.0, 10.0, 30.0, 15.0]]


def _break(data: dict, case: str) -> str:
    """Damages the annotation of image 7 (or the file list); returns the name the error must give."""
    annotation = data["annotations"][3]
    if case == "outside":
        annotation["bbox"] = [2, 30, 18, 40]
    elif case == "negative":
        annotation["bbox"] = [2, 30, -3, 5]
    elif case == "category":
        annotation["category_id"] = 99
    elif case == "not_numbers":
        annotation["bbox"] = [2, 30, "wide"]
    elif case == "declared_size":
        data["images"][2]["width"] = 21
    elif case == "missing_file":
        data["images"][2]["file_name"] = "000000000008.png"
        return "000000000008.png"
    elif case == "unknown_image":
        annotation["image_id"] = 8
        return "instances_val2017.json"
    return "000000000007.png"


@pytest.mark.parametrize("case", ["outside", "negative", "category", "not_numbers",
                                  "declared_size", "missing_file", "unknown_image"])
def test_bad_annotations(tmp_path: Path, case: str) -> None:
    path = tiny_coco(tmp_path)
    data = json.loads(path.read_text())
    named = _break(data, case)
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match=named) as caught:
        CocoDetection(path, tmp_path / "val2017")
    if case == "category":
        assert "unknown category id 99" in str(caught.value)
    if case in ("category", "outside", "negative"):
        assert "instances_val2017.json" in str(caught.value)  # and the annotation file
    with pytest.warns(DataWarning, match="skipped 1"):
        dataset = CocoDetection(path, tmp_path / "val2017", skip_bad=True)
    assert len(dataset.skipped) == 1 and named in dataset.skipped[0][0]
    # An annotation pointing nowhere is dropped; a bad image's annotation drops the image.
    assert len(dataset) == (3 if case == "unknown_image" else 2)


def test_limit_and_missing_json(tmp_path: Path) -> None:
    tiny_coco(tmp_path)
    assert open_dataset(DatasetConfig("coco", str(tmp_path), split="val", limit=1)).keys == ["000000000001"]
    with pytest.raises(DataError, match="instances_train2017.json"):
        open_dataset(DatasetConfig("coco", str(tmp_path), split="train"))


def cvat_layout(root: Path, folder: str = "images") -> Path:
    """CVAT's COCO export: ``annotations/instances_default.json`` with the images in ``images/``."""
    tiny_coco(root)
    (root / "val2017").rename(root / folder)
    (root / "annotations" / "instances_val2017.json").rename(root / "annotations" / "instances_default.json")
    return root


def test_images_beside_the_json_are_found(tmp_path: Path) -> None:
    root = cvat_layout(tmp_path)
    config = DatasetConfig("coco", str(root), annotations="annotations/instances_default.json")
    dataset = open_dataset(config)  # images/ is tried after <split>2017/
    assert len(dataset) == 3 and dataset[0].image.shape == (3, 40, 60)
    assert len(open_dataset(DatasetConfig("coco", str(root), annotations="annotations/instances_default.json",
                                          images="images"))) == 3


def test_another_image_folder_is_named_by_data_images(tmp_path: Path) -> None:
    root = cvat_layout(tmp_path, "frames")
    annotations = "annotations/instances_default.json"
    with pytest.raises(DataError) as error:
        open_dataset(DatasetConfig("coco", str(root), annotations=annotations))
    message = str(error.value)
    assert "image file not found" in message and "data.images=DIR" in message
    for tried in ("train2017", "images", str(root)):
        assert tried in message.split("image folders tried:")[1]
    assert len(open_dataset(DatasetConfig("coco", str(root), annotations=annotations, images="frames"))) == 3
