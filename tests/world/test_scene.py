"""Scene sampling: presets respected, objects placed exactly where and as large as asked."""

import math

import numpy as np
import pytest

from must.world.domains import get_domain
from must.world import CATEGORIES, DOMAINS, make_scene
from must.world.scene import Camera, _place, focal_length, look_at, scene_rng
from must.world.shapes import SHAPES


@pytest.mark.parametrize("name", list(DOMAINS))
def test_scenes_follow_their_preset(name: str) -> None:
    for index in range(5):
        preset = get_domain(name, index)  # a mixture: the part image `index` is drawn from
        scene = make_scene(name, seed=0, index=index, size=64)
        assert 1 <= len(scene.objects) <= preset.objects[1]
        assert scene.floor.texture in preset.floor_textures
        assert scene.wall.texture in preset.wall_textures
        assert abs(np.degrees(np.arcsin(scene.sun[2])) - np.mean(preset.sun_elevation)) <= (
            np.ptp(preset.sun_elevation) / 2 + 1e-9)
        assert scene.camera.eye[2] > 0


@pytest.mark.parametrize("category", range(len(CATEGORIES)))
def test_placement_puts_the_bounding_sphere_at_the_asked_pixel_and_size(category: int) -> None:
    size = 64
    eye = np.array([0.0, 0.0, 1.6])
    forward = np.array([math.cos(0.3), math.sin(0.3), -0.8])
    camera = Camera(eye, look_at(eye, forward), focal_length(60, size), size)
    position, scale = _place(camera, category, u=0.3, v=0.7, apparent=0.2)
    shape = SHAPES[CATEGORIES[category]]
    center = position + np.asarray(shape.bound_center) * scale  # yaw keeps it on the axis
    x, y, z = (center - eye) @ camera.rotation
    assert position[2] == 0
    assert np.allclose([camera.focal * x / z + size / 2, camera.focal * y / z + size / 2],
                       [0.3 * size, 0.7 * size])
    assert math.isclose(2 * shape.bound_radius * scale * camera.focal / z, 0.2 * size)


def test_each_index_has_its_own_generator() -> None:
    first = scene_rng("pool", 0, 1).random(4)
    assert np.array_equal(first, scene_rng("pool", 0, 1).random(4))
    for other in (scene_rng("pool", 0, 2), scene_rng("pool", 1, 1), scene_rng("depth", 0, 1)):
        assert not np.array_equal(first, other.random(4))
