"""File helpers: header probe, decoding, JSON, each failing with the file's name."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from must.data.readers import DataError
from must.data.readers.files import load_image, probe_image, read_json


def test_probe_and_load_agree_on_size(tmp_path: Path) -> None:
    path = tmp_path / "rgba.png"
    rgba = np.random.default_rng(0).integers(0, 256, (4, 9, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(path)
    assert probe_image(path) == (4, 9)
    image = load_image(path)
    assert image.shape == (3, 4, 9) and image.dtype == torch.uint8
    assert torch.equal(image, torch.from_numpy(rgba[..., :3]).permute(2, 0, 1))  # alpha dropped


def test_missing_image_names_the_file_that_named_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="gone.png.*named in list.txt"):
        probe_image(tmp_path / "gone.png", named_in="list.txt")
    with pytest.raises(DataError, match="gone.png"):
        load_image(tmp_path / "gone.png")


def test_json_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="broken.json: not valid JSON"):
        read_json(broken)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    with pytest.raises(DataError, match="list.json: top level must be a JSON object"):
        read_json(listing)
    with pytest.raises(DataError, match="absent.json"):
        read_json(tmp_path / "absent.json")
