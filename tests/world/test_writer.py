"""generate(): every file in the standard formats, COCO JSON through pycocotools, resume and
re-run behaviour, parallel workers giving the same bytes."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO
from pycocotools import mask as mask_utils

from must.world import CATEGORIES, SEGMENTATION_CLASSES, generate, render_image

COUNT, SIZE = 6, 40
# pycocotools' own mask decoding warns under NumPy 2; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _tree(root: Path) -> dict[str, bytes]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate("clutter", tmp_path_factory.mktemp("world") / "clutter", count=COUNT,
                    size=SIZE, seed=7, progress=False)


def test_every_file_is_written_in_its_format(dataset: Path) -> None:
    manifest = json.loads((dataset / "world.json").read_text())
    assert manifest["count"] == COUNT and manifest["categories"] == list(CATEGORIES)
    assert manifest["segmentation_classes"] == list(SEGMENTATION_CLASSES)
    assert manifest["camera_intrinsics"]["cx"] == SIZE / 2
    for index in range(COUNT):
        key = f"clutter-{index:06d}"
        image = render_image("clutter", seed=7, index=index, size=SIZE)
        rgb = np.asarray(Image.open(dataset / "images" / CATEGORIES[image.label] / f"{key}.png"))
        assert np.array_equal(rgb, image.rgb)
        assert np.array_equal(np.asarray(Image.open(dataset / "masks" / f"{key}.png")),
                              image.segmentation)
        depth = np.asarray(Image.open(dataset / "depth" / f"{key}.png"))
        assert depth.dtype == np.uint16
        assert np.abs(depth / 1000.0 - image.depth).max() <= 0.0005 + 1e-6
        normals = np.load(dataset / "normals" / f"{key}.npy")
        assert normals.dtype == np.float16 and normals.shape == (SIZE, SIZE, 3)
        assert np.abs(normals.astype(np.float32) - image.normals).max() < 1e-3
        instances = np.asarray(Image.open(dataset / "instances" / f"{key}.png"))
        assert np.array_equal(instances.astype(np.uint16), image.instances)
    assert not list(dataset.rglob("*.tmp"))


def test_coco_json_loads_with_pycocotools(dataset: Path) -> None:
    coco = COCO(str(dataset / "annotations" / "instances.json"))
    expected = sum(len(render_image("clutter", 7, i, SIZE).boxes) for i in range(COUNT))
    assert len(coco.getAnnIds()) == expected and len(coco.getImgIds()) == COUNT
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CATEGORIES)
    for annotation in coco.loadAnns(coco.getAnnIds()):
        info = coco.loadImgs(annotation["image_id"])[0]
        assert (dataset / info["file_name"]).exists()
        mask = coco.annToMask(annotation)
        rows, cols = np.nonzero(mask)
        x, y, w, h = annotation["bbox"]
        assert [x, y, x + w, y + h] == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
        assert annotation["area"] == mask.sum() == mask_utils.area(annotation["segmentation"])


def test_rerun_on_a_complete_directory_changes_nothing(dataset: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in dataset.rglob("*")}
    generate("clutter", dataset, count=COUNT, size=SIZE, seed=7, progress=False)
    assert {p: p.stat().st_mtime_ns for p in dataset.rglob("*")} == before


def test_a_directory_of_another_dataset_is_refused(dataset: Path) -> None:
    with pytest.raises(ValueError, match="another world dataset"):
        generate("clutter", dataset, count=COUNT, size=SIZE, seed=8, progress=False)


def test_resume_restores_deleted_files_identically(dataset: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    original = _tree(copy)
    # An interrupted run: no world.json / COCO yet, some images half done, some not started.
    doomed = [copy / "world.json", copy / "annotations" / "instances.json",
              *sorted((copy / "depth").iterdir())[:2], *sorted((copy / "records").iterdir())[3:5],
              *sorted((copy / "normals").iterdir())[5:]]
    (copy / "masks" / ".clutter-000001.png.99.tmp").write_bytes(b"torn")
    for path in doomed:
        path.unlink()
    generate("clutter", copy, count=COUNT, size=SIZE, seed=7, progress=False)
    assert _tree(copy) == original


def test_parallel_workers_write_the_same_bytes(dataset: Path, tmp_path: Path) -> None:
    parallel = generate("clutter", tmp_path / "parallel", count=COUNT, size=SIZE, seed=7,
                        progress=False, workers=2)
    assert _tree(parallel) == _tree(dataset)
