"""The rendered labels against each other and against geometry: determinism, planes seen by
depth and normals alike, normals facing the camera, tight boxes, the image-level class."""

import numpy as np
import pytest

from must.world import (CATEGORIES, DOMAINS, SEGMENTATION_CLASSES, STUFF, WorldImage,
                        Scene, make_scene, render_image)
from must.world.render import camera_rays
from must.world.shapes import SHAPES

FIELDS = ("rgb", "boxes", "box_labels", "segmentation", "depth", "normals", "instances")


def _bytes(image: WorldImage) -> list[bytes]:
    return [getattr(image, name).tobytes() for name in FIELDS] + [bytes([image.label])]


def test_same_seed_same_bytes_other_seed_or_index_other_image() -> None:
    first = render_image("scenes", seed=3, index=5, size=48)
    render_image("scenes", seed=3, index=4, size=48)  # other indices do not disturb index 5
    assert _bytes(render_image("scenes", seed=3, index=5, size=48)) == _bytes(first)
    assert not np.array_equal(render_image("scenes", seed=4, index=5, size=48).rgb, first.rgb)
    assert not np.array_equal(render_image("scenes", seed=3, index=6, size=48).rgb, first.rgb)


@pytest.mark.parametrize("domain", list(DOMAINS))
@pytest.mark.parametrize("size", [64, 128])
def test_every_domain_renders_with_consistent_labels(domain: str, size: int) -> None:
    image = render_image(domain, seed=0, index=1, size=size)
    assert image.rgb.shape == (size, size, 3) and image.rgb.dtype == np.uint8
    assert image.segmentation.dtype == np.uint8 and image.depth.dtype == np.float32
    assert image.normals.shape == (size, size, 3) and image.instances.dtype == np.uint16
    assert image.segmentation.max() < len(SEGMENTATION_CLASSES)
    assert 0 <= image.label < len(CATEGORIES)
    sky = image.segmentation == STUFF.index("sky")
    assert ((image.depth == 0) == sky).all()
    assert (image.depth[~sky] > 0).all() and image.depth.max() < 65.5
    is_object = image.segmentation >= len(STUFF)
    assert ((image.instances > 0) == is_object).all()
    assert image.rgb.std() > 10  # not a blank frame


def _back_project(image: WorldImage, mask: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(mask)
    k = image.intrinsics
    z = image.depth[rows, cols].astype(np.float64)
    x = (cols + 0.5 - k[0, 2]) * z / k[0, 0]
    y = (rows + 0.5 - k[1, 2]) * z / k[1, 1]
    return np.stack([x, y, z], axis=1)


def _fit_plane(points: np.ndarray) -> tuple[np.ndarray, float]:
    center = points.mean(axis=0)
    _, singular, vt = np.linalg.svd(points - center, full_matrices=False)
    return vt[2], singular[2] / np.sqrt(len(points))


@pytest.mark.parametrize("domain,index", [("scenes", 0), ("depth", 2), ("transfer", 3)])
def test_depth_and_normals_agree_on_planes(domain: str, index: int) -> None:
    image = render_image(domain, seed=1, index=index, size=64)
    checked = 0
    for stuff in ("floor", "wall"):
        region = image.segmentation == STUFF.index(stuff)
        # A room has up to four walls: one plane per distinct normal.
        keys = np.round(image.normals[region], 3)
        for key in np.unique(keys, axis=0):
            mask = region & (np.abs(image.normals - key).max(axis=-1) < 1e-3)
            if mask.sum() < 30:
                continue
            normal, spread = _fit_plane(_back_project(image, mask))
            assert spread < 2e-4  # the back-projected depth is flat
            mean_normal = image.normals[mask].mean(axis=0)
            assert abs(abs(normal @ mean_normal) - 1) < 1e-4
            checked += 1
    assert checked >= 1


@pytest.mark.parametrize("domain", ["scenes", "transfer"])
def test_object_depth_and_normals_land_on_the_scene_objects(domain: str) -> None:
    """Back-projected depth, taken to each object's frame with the scene's camera, lies on the
    object's surface, and the camera-frame normal there is the shape's normal."""
    agree, total = 0, 0
    for index in range(3):
        image, scene = render_image(domain, 4, index, 64), make_scene(domain, 4, index, 64)
        a, t = _object_agreement(image, scene)
        agree, total = agree + a, total + t
    assert total > 300 and agree / total > 0.95


def _object_agreement(image: WorldImage, scene: Scene) -> tuple[int, int]:
    camera = scene.camera
    agree, total = 0, 0
    for instance in np.unique(image.instances[image.instances > 0]):
        obj = scene.objects[instance - 1]
        mask = image.instances == instance
        world = camera.eye + _back_project(image, mask) @ camera.rotation.T
        c, s = np.cos(obj.yaw), np.sin(obj.yaw)
        yaw = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        local = (world - obj.position) @ yaw / obj.scale
        shape = SHAPES[obj.shape_name]
        from_center = np.linalg.norm(local - shape.bound_center, axis=1)
        assert (from_center <= shape.bound_radius + 1e-4).all()
        expected = shape.normal(local)
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        rendered = image.normals[mask].astype(np.float64) @ camera.rotation.T @ yaw
        agree += int((np.einsum("ij,ij->i", expected, rendered) > 0.999).sum())
        total += int(mask.sum())
    return agree, total


@pytest.mark.parametrize("domain", ["clutter", "transfer"])
def test_normals_are_unit_and_face_the_camera(domain: str) -> None:
    image = render_image(domain, seed=2, index=0, size=64)
    normals = image.normals.reshape(-1, 3).astype(np.float64)
    valid = image.depth.reshape(-1) > 0
    assert np.abs(np.linalg.norm(normals[valid], axis=1) - 1).max() < 1e-5
    assert (normals[~valid] == 0).all()
    rays = camera_rays(64, float(image.intrinsics[0, 0]))
    assert (np.einsum("ij,ij->i", normals[valid], rays[valid]) < 0).all()
    # The floor and most surfaces point back toward the camera (negative z).
    assert (normals[valid, 2] < 0).mean() > 0.97


@pytest.mark.parametrize("domain", ["clutter", "scenes", "pool"])
def test_boxes_are_the_tight_boxes_of_the_instance_masks(domain: str) -> None:
    for index in range(3):
        image = render_image(domain, seed=0, index=index, size=64)
        ids = set(np.unique(image.instances).tolist()) - {0}
        assert set(image.box_instances.tolist()) == ids
        for box, label, instance in zip(image.boxes, image.box_labels, image.box_instances):
            rows, cols = np.nonzero(image.instances == instance)
            assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            classes = np.unique(image.segmentation[image.instances == instance])
            assert classes.tolist() == [len(STUFF) + label]


def test_objects_class_is_the_category_covering_most_object_pixels() -> None:
    for index in range(6):
        image = render_image("objects", seed=0, index=index, size=64)
        assert len(image.boxes) == 1
        object_ids = image.segmentation[image.segmentation >= len(STUFF)]
        assert np.bincount(object_ids).argmax() == len(STUFF) + image.label
        assert image.box_labels.tolist() == [image.label]
        width = image.boxes[0, 2] - image.boxes[0, 0]
        assert width >= 0.2 * 64  # one large object


def test_small_objects_stay_visible_boxes_mostly_at_least_6_pixels() -> None:
    sides = np.concatenate([render_image("clutter", seed=0, index=i, size=64).boxes
                            for i in range(8)])
    smaller_side = np.minimum(sides[:, 2] - sides[:, 0], sides[:, 3] - sides[:, 1])
    assert len(sides) >= 40 and (smaller_side >= 6).mean() > 0.8
