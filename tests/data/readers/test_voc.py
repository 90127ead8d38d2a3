"""PASCAL VOC: XML boxes (with the difficult flag), palette masks, split lists, bad input."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from must.data.readers import DataError, DataWarning, DatasetConfig, VocDataset, open_dataset
from must.data.readers.voc import VOC_CLASSES

OBJECT = """<object><name>{name}</name><difficult>{difficult}</difficult>
<bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox>
</object>"""
OBJECTS = {"2008_000001": [("dog", 0, (1, 1, 10, 8)), ("person", 1, (5, 2, 20, 16))],
           "2008_000002": [("tvmonitor", 0, (3, 4, 6, 9))]}
MASK = np.array([[0, 0, 12, 12], [0, 255, 12, 12], [15, 15, 255, 0]], np.uint8)


def write_xml(path: Path, objects: list, width: int = 20, height: int = 16) -> None:
    body = "".join(OBJECT.format(name=n, difficult=d, box=b) for n, d, b in objects)
    path.write_text(f"<annotation><filename>{path.stem}.jpg</filename><size><width>{width}</width>"
                    f"<height>{height}</height><depth>3</depth></size>{body}</annotation>")


def palette_png(path: Path, mask: np.ndarray) -> None:
    image = Image.fromarray(mask, "P")
    image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    image.save(path)


def tiny_voc(root: Path) -> Path:
    """VOCdevkit/VOC2012 with two detection images, one of which also has a mask, plus one
    segmentation-only image."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "SegmentationClass", "ImageSets/Main",
                "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    for image_id in ("2008_000001", "2008_000002", "2008_000003"):
        Image.fromarray(np.full((16, 20, 3), 90, np.uint8)).save(voc / "JPEGImages" / f"{image_id}.jpg")
    for image_id, objects in OBJECTS.items():
        write_xml(voc / "Annotations" / f"{image_id}.xml", objects)
    for image_id in ("2008_000002", "2008_000003"):
        palette_png(voc / "SegmentationClass" / f"{image_id}.png", np.pad(MASK, ((0, 13), (0, 16))))
    (voc / "ImageSets/Main/train.txt").write_text("2008_000001\n2008_000002\n")
    (voc / "ImageSets/Segmentation/train.txt").write_text("2008_000002\n2008_000003\n")
    return voc


def test_detection_matches_torchvision_parse(tmp_path: Path) -> None:
    from torchvision.datasets import VOCDetection

    voc = tiny_voc(tmp_path)
    ours = VocDataset(voc, "train", ("detection",))
    theirs = VOCDetection(str(tmp_path), year="2012", image_set="train")
    assert ours.keys == ["2008_000001", "2008_000002"]
    for index in range(len(ours)):
        target = ours[index].targets["detection"]
        objects = theirs[index][1]["annotation"]["object"]
        expected = [[float(o["bndbox"][k]) for k in ("xmin", "ymin", "xmax", "ymax")] for o in objects]
        # 1-based inclusive -> 0-based [x1, y1, x2, y2]
        expected = [[x1 - 1, y1 - 1, x2, y2] for x1, y1, x2, y2 in expected]
        assert target["boxes"].tolist() == expected
        assert target["labels"].tolist() == [VOC_CLASSES.index(o["name"]) for o in objects]
        assert target["difficult"].dtype == torch.bool
        assert target["difficult"].tolist() == [o["difficult"] == "1" for o in objects]


def test_both_tasks_each_image_has_what_its_lists_give(tmp_path: Path) -> None:
    voc = tiny_voc(tmp_path)
    dataset = open_dataset(DatasetConfig("voc", str(voc)))
    assert dataset.tasks == ("detection", "segmentation")
    assert dataset.keys == ["2008_000001", "2008_000002", "2008_000003"]
    assert [sorted(dataset[i].targets) for i in range(3)] == [
        ["detection"], ["detection", "segmentation"], ["segmentation"]]
    mask = dataset[2].targets["segmentation"]
    assert mask.dtype == torch.int64 and mask.shape == (16, 20)
    assert mask[:3, :4].tolist() == MASK.tolist()  # palette indices, not colours; 255 kept
    assert dataset.classes["segmentation"][0] == "background" and len(dataset.classes["segmentation"]) == 21


def _break(voc: Path, case: str) -> Path:
    xml = voc / "Annotations" / "2008_000002.xml"
    if case == "category":
        write_xml(xml, [("unicorn", 0, (1, 1, 4, 4))])
    elif case == "negative":
        write_xml(xml, [("dog", 0, (8, 1, 4, 4))])
    elif case == "outside":
        write_xml(xml, [("dog", 0, (1, 1, 30, 4))])
    elif case == "malformed":
        xml.write_text("<annotation><object>")
    elif case == "missing_xml":
        xml.unlink()
    elif case == "missing_image":
        (voc / "JPEGImages" / "2008_000002.jpg").unlink()
        return voc / "JPEGImages" / "2008_000002.jpg"
    elif case == "mask_size":
        mask = voc / "SegmentationClass" / "2008_000002.png"
        palette_png(mask, MASK)
        return mask
    return xml


@pytest.mark.parametrize("case", ["category", "negative", "outside", "malformed", "missing_xml",
                                  "missing_image", "mask_size"])
def test_bad_input(tmp_path: Path, case: str) -> None:
    voc = tiny_voc(tmp_path)
    bad = _break(voc, case)
    with pytest.raises(DataError, match=bad.name) as caught:
        VocDataset(voc, "train")
    assert caught.value.path == str(bad)
    with pytest.warns(DataWarning, match="skipped 1"):
        dataset = VocDataset(voc, "train", skip_bad=True)
    assert dataset.keys == ["2008_000001", "2008_000003"]
    assert dataset.skipped == [(str(bad), caught.value.problem)]


def test_mask_value_that_is_no_class(tmp_path: Path) -> None:
    voc = tiny_voc(tmp_path)
    mask = voc / "SegmentationClass" / "2008_000003.png"
    palette_png(mask, np.full((16, 20), 30, np.uint8))
    dataset = VocDataset(voc, "train", ("segmentation",))
    with pytest.raises(DataError, match="2008_000003.png.*\\[30\\]"):
        dataset[1]


def test_missing_split_list(tmp_path: Path) -> None:
    voc = tiny_voc(tmp_path)
    with pytest.raises(DataError, match="val.txt"):
        VocDataset(voc, "val", ("detection",))
