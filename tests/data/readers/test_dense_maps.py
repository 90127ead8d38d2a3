"""Depth, normal, class and instance maps; the NYU / DIODE-style folder dataset."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from must.data.readers import DataError, DataWarning, DatasetConfig, DenseFolders, open_dataset
from must.data.readers.dense_maps import (read_class_map, read_depth, read_instance_map,
                                          read_normals)

SIZE = (3, 4)


def test_depth_png_millimetres_to_meters(tmp_path: Path) -> None:
    millimetres = np.array([[0, 1, 1234, 65535], [10, 20, 30, 40], [5, 0, 7, 8]], np.uint16)
    Image.fromarray(millimetres).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")  # really a 16-bit PNG
    depth = read_depth(tmp_path / "d.png", SIZE)
    assert depth.dtype == torch.float32 and depth.shape == SIZE
    assert torch.allclose(depth, torch.from_numpy(millimetres.astype(np.float32) / 1000))
    assert depth[0, 0] == 0 and depth[0, 2] == pytest.approx(1.234)


def test_depth_npy_meters_invalid_to_zero(tmp_path: Path) -> None:
    meters = np.array([[1.5, np.nan, -2.0, np.inf]] * 3, np.float64)
    np.save(tmp_path / "d.npy", meters[None])  # [1, H, W] is accepted too
    depth = read_depth(tmp_path / "d.npy", SIZE)
    assert depth.dtype == torch.float32 and depth[0].tolist() == [1.5, 0.0, 0.0, 0.0]


def test_normals_both_layouts_unit_and_invalid(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(*SIZE, 3))
    vectors /= np.linalg.norm(vectors, axis=-1, keepdims=True)
    vectors[0, 0] = 0  # invalid pixel
    np.save(tmp_path / "hwc.npy", vectors.astype(np.float16))  # the world stores float16 [H, W, 3]
    np.save(tmp_path / "chw.npy", vectors.transpose(2, 0, 1).astype(np.float32))
    from_hwc = read_normals(tmp_path / "hwc.npy", SIZE)
    from_chw = read_normals(tmp_path / "chw.npy", SIZE)
    assert from_hwc.dtype == torch.float32 and from_hwc.shape == (3, *SIZE)
    assert torch.allclose(from_hwc, from_chw, atol=2e-3)
    lengths = from_hwc.norm(dim=0)
    assert lengths[0, 0] == 0 and torch.allclose(lengths.flatten()[1:], torch.ones(11), atol=1e-5)


def test_normals_layout_follows_the_image_when_ambiguous(tmp_path: Path) -> None:
    """[3, 4, 3] is [H=3, W=4, 3] or [3, H=4, W=3]: the image size decides."""
    array = np.zeros((3, 4, 3), np.float32)
    array[..., 2] = 1
    np.save(tmp_path / "n.npy", array)
    assert read_normals(tmp_path / "n.npy", (3, 4)).shape == (3, 3, 4)
    assert read_normals(tmp_path / "n.npy", (4, 3)).shape == (3, 4, 3)


def test_class_and_instance_maps(tmp_path: Path) -> None:
    ids = np.array([[0, 1, 2, 255]] * 3, np.uint8)
    Image.fromarray(ids).save(tmp_path / "m.png")
    assert read_class_map(tmp_path / "m.png", SIZE, num_classes=3).tolist() == ids.tolist()
    with pytest.raises(DataError, match="m.png.*\\[2\\]"):
        read_class_map(tmp_path / "m.png", SIZE, num_classes=2)
    instances = np.array([[0, 300, 300, 7]] * 3, np.uint16)
    Image.fromarray(instances).save(tmp_path / "i.png")
    result = read_instance_map(tmp_path / "i.png", SIZE)
    assert result.dtype == torch.int64 and result.tolist() == instances.tolist()


@pytest.mark.parametrize("case", ["eight_bit_depth", "size", "normals_shape", "not_npy"])
def test_bad_maps_name_the_file(tmp_path: Path, case: str) -> None:
    if case == "eight_bit_depth":
        path, read = tmp_path / "d.png", read_depth
        Image.fromarray(np.zeros(SIZE, np.uint8)).save(path)
    elif case == "size":
        path, read = tmp_path / "d.png", read_depth
        Image.fromarray(np.zeros((5, 5), np.uint16)).save(path)
    elif case == "normals_shape":
        path, read = tmp_path / "n.npy", read_normals
        np.save(path, np.zeros((*SIZE, 2), np.float32))
    else:
        path, read = tmp_path / "n.npy", read_normals
        path.write_bytes(b"not numpy at all")
    with pytest.raises(DataError, match=path.name):
        read(path, SIZE)


def nyu_like(root: Path) -> None:
    for sub in ("images", "depth", "normals"):
        (root / sub).mkdir(parents=True)
    for name in ("a", "b", "c"):
        Image.fromarray(np.zeros((*SIZE, 3), np.uint8)).save(root / "images" / f"{name}.png")
    Image.fromarray(np.full(SIZE, 2500, np.uint16)).save(root / "depth" / "a.png")
    np.save(root / "depth" / "b.npy", np.full(SIZE, 0.5, np.float32))
    np.save(root / "normals" / "b.npy", np.tile(np.float32([0, 0, -1]), (*SIZE, 1)))


def test_dense_folders(tmp_path: Path) -> None:
    nyu_like(tmp_path)
    dataset = open_dataset(DatasetConfig("dense", str(tmp_path)))
    assert dataset.tasks == ("depth", "normals") and dataset.keys == ["a", "b"]  # c has no map
    assert set(dataset[0].targets) == {"depth"} and float(dataset[0].targets["depth"][0, 0]) == 2.5
    assert dataset[1].targets["normals"][:, 0, 0].tolist() == [0, 0, -1]
    depth_only = DenseFolders(tmp_path, ("depth",))
    assert depth_only.tasks == ("depth",) and set(depth_only[1].targets) == {"depth"}


def test_dense_folders_bad_maps(tmp_path: Path) -> None:
    nyu_like(tmp_path)
    np.save(tmp_path / "normals" / "a.npy", np.zeros((5, 5, 3), np.float32))  # wrong size
    np.save(tmp_path / "depth" / "z.npy", np.zeros(SIZE, np.float32))  # no image z
    with pytest.raises(DataError, match="z.npy"):
        DenseFolders(tmp_path)
    with pytest.warns(DataWarning, match="skipped 2"):
        dataset = DenseFolders(tmp_path, skip_bad=True)
    assert sorted(Path(p).name for p, _ in dataset.skipped) == ["a.npy", "z.npy"]
    assert dataset.keys == ["b"]


def test_header_probes_agree_with_the_decoders_and_refuse_junk(tmp_path: Path) -> None:
    from must.data.readers.dense_maps import probe_npy_shape, probe_png_size

    for mode, array in (("L", np.zeros((7, 11), np.uint8)), ("I;16", np.zeros((5, 3), np.uint16)),
                        ("RGB", np.zeros((4, 9, 3), np.uint8))):
        path = tmp_path / f"{mode.replace(';', '')}.png"
        Image.fromarray(array).save(path)
        with Image.open(path) as image:
            assert probe_png_size(path) == (image.size[1], image.size[0]) == array.shape[:2]
    for version in ((1, 0), (2, 0)):
        path = tmp_path / f"v{version[0]}.npy"
        array = np.zeros((3, 4, 5), np.float16)
        with open(path, "wb") as file:
            np.lib.format.write_array(file, array, version=version)
        assert probe_npy_shape(path) == (3, 4, 5) == np.load(path).shape
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"GIF89a" + bytes(40))
    short = tmp_path / "short.npy"
    short.write_bytes(b"\x93NUMPY")
    missing = tmp_path / "none.png"
    for path, probe in ((junk, probe_png_size), (short, probe_npy_shape), (missing, probe_png_size)):
        with pytest.raises(DataError, match=path.name):
            probe(path)
