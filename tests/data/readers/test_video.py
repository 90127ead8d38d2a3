"""``video:DIR``: the clips ``must world video`` writes read back frame by frame with their motion
masks (the round trip), users' own clips in the same layout (1-bit PNG or .npy masks), and a bad
layout failing with a DataError that names the file."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from must.data.readers import DataError, DatasetConfig, VideoClips, open_dataset
from must.world import generate_clips

SIZE, FRAMES = 32, 3


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clips("video", tmp_path_factory.mktemp("clips") / "video", count=2, size=SIZE,
                          seed=0, frames=FRAMES, progress=False)


def test_round_trip_of_generated_clips(clips: Path) -> None:
    dataset = open_dataset(DatasetConfig(format="video", root=str(clips)))
    assert isinstance(dataset, VideoClips) and dataset.tasks == ("motion_segmentation",)
    assert dataset.keys == [f"clip-{c:06d}/frame-{t:02d}" for c in range(2) for t in range(FRAMES)]
    for index, key in enumerate(dataset.keys):
        sample = dataset[index]
        clip, frame = key.split("/")
        rgb = np.array(Image.open(clips / clip / f"{frame}.png"))
        assert torch.equal(sample.image, torch.from_numpy(rgb).permute(2, 0, 1))
        mask = np.asarray(Image.open(clips / clip / "motion" / f"{frame}.png"))
        target = sample.targets["motion_segmentation"]
        assert target.dtype == torch.uint8 and target.shape == (SIZE, SIZE)
        assert torch.equal(target, torch.from_numpy((mask == 255).astype(np.uint8)))
    assert any(bool(dataset[i].targets["motion_segmentation"].any()) for i in range(len(dataset)))
    assert len(open_dataset(DatasetConfig(format="video", root=str(clips), limit=4))) == 4


def _user_clip(root: Path, mask_format: str) -> None:
    (root / "walk" / "motion").mkdir(parents=True)
    for t in range(2):
        Image.fromarray(np.full((8, 12, 3), 40 * t, np.uint8)).save(root / "walk" / f"{t:05d}.jpg")
        mask = np.zeros((8, 12), bool)
        mask[2:5, 3:7] = True
        if mask_format == "npy":
            np.save(root / "walk" / "motion" / f"{t:05d}.npy", mask[None])
        else:
            Image.fromarray(mask).save(root / "walk" / "motion" / f"{t:05d}.png")  # 1-bit PNG


@pytest.mark.parametrize("mask_format", ["png", "npy"])
def test_users_own_clips(tmp_path: Path, mask_format: str) -> None:
    _user_clip(tmp_path, mask_format)
    dataset = VideoClips(tmp_path)
    assert dataset.keys == ["walk/00000", "walk/00001"]
    target = dataset[1].targets["motion_segmentation"]
    assert int(target.sum()) == 12 and int(target[3, 4]) == 1


def test_frame_without_mask_names_the_file(tmp_path: Path) -> None:
    _user_clip(tmp_path, "png")
    (tmp_path / "walk" / "motion" / "00001.png").unlink()
    with pytest.raises(DataError, match=r"walk/00001\.jpg: frame without its motion mask"):
        VideoClips(tmp_path)
    with pytest.warns(UserWarning, match="skipped 1"):
        assert VideoClips(tmp_path, skip_bad=True).keys == ["walk/00000"]


def test_mask_without_frame_and_wrong_size_name_the_file(tmp_path: Path) -> None:
    _user_clip(tmp_path, "png")
    Image.fromarray(np.zeros((8, 12), np.uint8)).save(tmp_path / "walk" / "motion" / "00002.png")
    with pytest.raises(DataError, match=r"motion/00002\.png: motion_segmentation target has no image "
                                        r"with key 'walk/00002'"):
        VideoClips(tmp_path)
    (tmp_path / "walk" / "motion" / "00002.png").unlink()
    Image.fromarray(np.zeros((9, 12), np.uint8)).save(tmp_path / "walk" / "motion" / "00001.png")
    with pytest.raises(DataError, match=r"motion/00001\.png: map is 9x12"):
        VideoClips(tmp_path)


def test_two_masks_of_one_frame_and_a_stray_file_name_the_file(tmp_path: Path) -> None:
    """A frame with both a PNG and a .npy mask is ambiguous (which one is its target?), and a
    file of another kind in a mask folder is no mask: both are errors, not silently passed over."""
    _user_clip(tmp_path, "png")
    np.save(tmp_path / "walk" / "motion" / "00001.npy", np.zeros((8, 12), np.uint8))
    with pytest.raises(DataError, match=r"motion/00001\.(npy|png): second motion_segmentation map"):
        VideoClips(tmp_path)
    (tmp_path / "walk" / "motion" / "00001.npy").unlink()
    (tmp_path / "walk" / "motion" / "00001.txt").write_text("notes")
    with pytest.raises(DataError, match=r"motion/00001\.txt: not a motion_segmentation map"):
        VideoClips(tmp_path)


def test_no_clips_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no clips"):
        VideoClips(tmp_path)
    with pytest.raises(DataError, match="directory not found"):
        VideoClips(tmp_path / "missing")
