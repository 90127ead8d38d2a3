"""ImageFolder: round trip of a tiny tree, and every kind of bad input it can hold."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from must.data.readers import DataError, DataWarning, ImageFolder


def write_image(path: Path, seed: int, size: tuple[int, int] = (6, 8), mode: str = "RGB") -> np.ndarray:
    """Writes a random image (PNG is lossless, so the pixels read back exactly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    array = np.random.default_rng(seed).integers(0, 256, (*size, channels), dtype=np.uint8)
    Image.fromarray(array if channels == 3 else array[..., 0], mode).save(path)
    return array


def tiny_tree(root: Path) -> dict[str, np.ndarray]:
    return {
        "cat/a": write_image(root / "cat" / "a.png", 0),
        "cat/sub/b": write_image(root / "cat" / "sub" / "b.png", 1),
        "dog/c": write_image(root / "dog" / "c.png", 2, mode="L"),
    }


def test_round_trip(tmp_path: Path) -> None:
    pixels = tiny_tree(tmp_path)
    dataset = ImageFolder(tmp_path)
    assert dataset.keys == ["cat/a", "cat/sub/b", "dog/c"]
    assert dataset.classes == {"classification": ["cat", "dog"]}
    assert [int(dataset[i].targets["classification"]) for i in range(3)] == [0, 0, 1]
    sample = dataset[0]
    assert sample.image.dtype == torch.uint8 and sample.image.shape == (3, 6, 8)
    assert torch.equal(sample.image, torch.from_numpy(pixels["cat/a"]).permute(2, 0, 1))
    gray = dataset[2].image  # grayscale replicated to RGB
    assert torch.equal(gray[0], gray[2]) and torch.equal(gray[0], torch.from_numpy(pixels["dog/c"][..., 0]))
    assert sample.targets["classification"].dtype == torch.int64
    assert set(sample.targets) == {"classification"}


def test_labels_match_torchvision(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder as TorchvisionImageFolder

    tiny_tree(tmp_path)
    ours = ImageFolder(tmp_path)
    theirs = TorchvisionImageFolder(str(tmp_path))
    assert ours.classes["classification"] == theirs.classes
    assert [int(ours[i].targets["classification"]) for i in range(len(ours))] == theirs.targets


def test_limit_keeps_the_first_items(tmp_path: Path) -> None:
    tiny_tree(tmp_path)
    assert ImageFolder(tmp_path, limit=2).keys == ["cat/a", "cat/sub/b"]


@pytest.mark.parametrize("case", ["corrupt", "truncated_png", "text_file", "outside_class"])
def test_bad_input_raises_naming_the_file_or_is_skipped(tmp_path: Path, case: str) -> None:
    tiny_tree(tmp_path)
    if case == "corrupt":
        bad = tmp_path / "dog" / "broken.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    elif case == "truncated_png":
        bad = tmp_path / "dog" / "short.png"
        write_image(bad, 3, size=(40, 40))
        bad.write_bytes(bad.read_bytes()[:200])
    elif case == "text_file":
        bad = tmp_path / "cat" / "notes.txt"
        bad.write_text("not an image")
    else:
        bad = tmp_path / "stray.png"
        write_image(bad, 4)
    with pytest.raises(DataError, match=bad.name) as caught:
        ImageFolder(tmp_path)
    assert caught.value.path == str(bad)
    with pytest.warns(DataWarning, match="skipped 1"):
        dataset = ImageFolder(tmp_path, skip_bad=True)
    assert len(dataset) == 3
    assert [path for path, _ in dataset.skipped] == [str(bad)]


def test_truncated_jpeg_fails_at_load_time_or_is_replaced(tmp_path: Path) -> None:
    """PIL's header check cannot see a truncated JPEG; decoding does, with the same error."""
    tiny_tree(tmp_path)
    bad = tmp_path / "cat" / "z.jpg"
    array = np.random.default_rng(5).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(array).save(bad)
    bad.write_bytes(bad.read_bytes()[:-300])  # header intact, entropy-coded data cut short
    dataset = ImageFolder(tmp_path)
    index = dataset.keys.index("cat/z")
    with pytest.raises(DataError, match="z.jpg"):
        dataset[index]
    forgiving = ImageFolder(tmp_path, skip_bad=True)
    with pytest.warns(DataWarning, match="z.jpg"):
        sample = forgiving[index]
    assert sample.key == forgiving.keys[index + 1]
    assert forgiving.skipped[0][0] == str(bad)


def test_fixed_class_list_sets_order_and_rejects_other_folders(tmp_path: Path) -> None:
    tiny_tree(tmp_path)
    dataset = ImageFolder(tmp_path, classes=["dog", "bird", "cat"])
    assert [int(dataset[i].targets["classification"]) for i in range(3)] == [2, 2, 0]
    with pytest.raises(DataError, match="dog"):
        ImageFolder(tmp_path, classes=["cat"])
    with pytest.warns(DataWarning):
        dataset = ImageFolder(tmp_path, classes=["cat"], skip_bad=True)
    assert dataset.keys == ["cat/a", "cat/sub/b"]
