"""The video domain: motion masks are exactly the renderer's moving-object pixels, flow is the
projected displacement of each pixel's 3-D point, clips are deterministic and resumable, and
``must world`` takes ``--frames`` for video only."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from must.cli import main
from must.world import Clip, generate_clips, make_clip, make_scene, render_frame
from must.world.render import render_scene

COUNT, FRAMES, SIZE = 3, 4, 40


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_clips("video", tmp_path_factory.mktemp("video") / "clips", count=COUNT,
                          size=SIZE, seed=5, frames=FRAMES, progress=False)


def test_motion_masks_are_the_moving_objects_pixels(clips: Path) -> None:
    """Each mask equals the pixels whose object (the renderer's id map, rendered here) has a
    velocity; frames, too, are the renderer's."""
    moving_pixels = 0
    for index in range(COUNT):
        record = json.loads((clips / f"clip-{index:06d}" / "clip.json").read_text())
        moving = [k + 1 for k, velocity in enumerate(record["velocities"]) if any(velocity)]
        assert moving and record["moving_instances"] == moving
        clip = make_clip(seed=5, index=index, size=SIZE)
        for t in range(FRAMES):
            scene = clip.scene
            objects = tuple(dataclasses.replace(obj, position=obj.position + t * np.asarray(v))
                            for obj, v in zip(scene.objects, record["velocities"]))
            camera = dataclasses.replace(scene.camera,
                                         eye=scene.camera.eye + t * np.asarray(record["camera_velocity"]))
            image = render_scene(dataclasses.replace(scene, objects=objects, camera=camera))
            expected = np.isin(image.instances, moving)
            name = f"frame-{t:02d}"
            mask = np.asarray(Image.open(clips / f"clip-{index:06d}" / "motion" / f"{name}.png"))
            assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
            assert np.array_equal(mask == 255, expected), (index, t)
            rgb = np.asarray(Image.open(clips / f"clip-{index:06d}" / f"{name}.png"))
            assert np.array_equal(rgb, image.rgb)
            flow = np.load(clips / f"clip-{index:06d}" / "flow" / f"{name}.npy")
            assert flow.dtype == np.float32 and flow.shape == (SIZE, SIZE, 2)
            moving_pixels += int(expected.sum())
    assert moving_pixels > 0


def _sliding_clip(camera_velocity: np.ndarray | None = None) -> Clip:
    """A scene with its first object sliding along the floor in the camera's right direction."""
    scene = make_scene("scenes", seed=1, index=2, size=64)
    right = scene.camera.rotation[:, 0].copy()
    right[2] = 0.0
    velocities = np.zeros((len(scene.objects), 3))
    velocities[0] = 0.05 * right / np.linalg.norm(right)
    return Clip(scene, velocities, np.zeros(3) if camera_velocity is None else camera_velocity)


def _projected_flow(clip: Clip, image_depth: np.ndarray, instances: np.ndarray) -> np.ndarray:
    """Back-projects every pixel with its z-depth and K, moves the point with its object and the
    camera, projects it again with K: the reference flow (pinhole algebra, no ray casting)."""
    camera = clip.scene.camera
    size = camera.size
    K = camera.intrinsics
    rows, cols = np.mgrid[:size, :size]
    pixels = np.stack([cols + 0.5, rows + 0.5, np.ones_like(cols, dtype=float)], axis=-1).reshape(-1, 3)
    local = (pixels @ np.linalg.inv(K).T) * image_depth.reshape(-1, 1).astype(np.float64)
    world = camera.eye + local @ camera.rotation.T
    owner = instances.reshape(-1).astype(int) - 1
    world[owner >= 0] += clip.velocities[owner[owner >= 0]]
    moved = (world - camera.eye - clip.camera_velocity) @ camera.rotation
    projected = moved @ K.T
    return (projected[:, :2] / projected[:, 2:] - pixels[:, :2]).reshape(size, size, 2)


def test_flow_of_a_translating_object_is_its_projected_displacement() -> None:
    clip = _sliding_clip()
    frame = render_frame(clip, 0)
    instances = frame.image.instances
    on_object = instances == 1
    assert on_object.sum() > 20 and np.array_equal(frame.motion, on_object)
    expected = _projected_flow(clip, frame.image.depth, instances)
    # float32 z-depth in the reference: agreement to a thousandth of a pixel
    assert np.abs(frame.flow[on_object] - expected[on_object]).max() < 1e-3
    assert np.abs(frame.flow[on_object, 0]).min() > 0.05  # it moves to the right...
    assert (frame.flow[on_object, 0] > 0).all()
    assert np.all(frame.flow[~on_object] == 0)  # ...and nothing else moves (static camera)
    # The moved point is where the next frame shows the same object (unless it is occluded there).
    following = render_scene(clip.at(1)).instances
    rows, cols = np.nonzero(on_object)
    target_rows = np.clip(np.floor(rows + 0.5 + frame.flow[rows, cols, 1]).astype(int), 0, 63)
    target_cols = np.clip(np.floor(cols + 0.5 + frame.flow[rows, cols, 0]).astype(int), 0, 63)
    assert (following[target_rows, target_cols] == 1).mean() > 0.9


def test_camera_motion_moves_the_background_but_not_the_mask() -> None:
    clip = _sliding_clip(camera_velocity=np.array([0.02, -0.01, 0.005]))
    frame = render_frame(clip, 0)
    expected = _projected_flow(clip, frame.image.depth, frame.image.instances)
    ground = frame.image.depth > 0
    assert np.abs(frame.flow[ground] - expected[ground]).max() < 1e-3
    assert np.abs(frame.flow[ground & ~frame.motion]).max() > 0.01
    assert np.array_equal(frame.motion, frame.image.instances == 1)
    sky = frame.image.depth == 0
    assert np.all(frame.flow[sky] == 0)  # directions at infinity do not change under translation


def test_clips_are_deterministic_and_resume(clips: Path, tmp_path: Path) -> None:
    again = generate_clips("video", tmp_path / "again", count=COUNT, size=SIZE, seed=5,
                           frames=FRAMES, progress=False)
    assert _tree(again) == _tree(clips)
    (again / "clip-000001" / "clip.json").unlink()
    (again / "clip-000001" / "flow" / "frame-02.npy").unlink()
    (again / "world.json").unlink()
    generate_clips("video", again, count=COUNT, size=SIZE, seed=5, frames=FRAMES, progress=False)
    assert _tree(again) == _tree(clips)
    other = generate_clips("video", tmp_path / "other", count=1, size=SIZE, seed=6, frames=FRAMES,
                           progress=False)
    assert (other / "clip-000000" / "frame-00.png").read_bytes() != (clips / "clip-000000" / "frame-00.png").read_bytes()


def test_a_directory_of_another_dataset_is_refused(clips: Path) -> None:
    from must.config import ConfigError
    with pytest.raises(ConfigError, match="another world dataset"):
        generate_clips("video", clips, count=COUNT, size=SIZE, seed=5, frames=FRAMES + 1, progress=False)


def test_cli_frames_for_video_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["world", "video", "--out", str(tmp_path / "v"), "--count", "1", "--size", "32",
                 "--frames", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "v" / "clip-000000").glob("*.png")) == ["frame-00.png", "frame-01.png"]
    capsys.readouterr()
    assert main(["world", "scenes", "--out", str(tmp_path / "s"), "--count", "1", "--frames", "3"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--frames applies to the video domain only" in error
    assert not (tmp_path / "s").exists()
    assert main(["world", "video", "--out", str(tmp_path / "w"), "--count", "1", "--frames", "1"]) == 2
    assert "--frames must be in [2, 100]" in capsys.readouterr().err


def test_a_finished_video_split_is_complete(clips: Path, tmp_path: Path) -> None:
    from must.world import is_complete
    assert is_complete(clips)
    assert not is_complete(tmp_path)
