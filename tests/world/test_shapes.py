"""Every shape's analytic ray hit against a naive reference: an implicit function written out
independently (negative inside), sampled densely along each ray."""

import numpy as np
import pytest

from must.world.shapes import CAPSULE, CONE, CYLINDER, EGG_RADII, HOLED_BOX, SHAPES, TORUS


def _box(p, hx, hy, height):
    return np.maximum.reduce([np.abs(p[..., 0]) - hx, np.abs(p[..., 1]) - hy, -p[..., 2],
                              p[..., 2] - height])


def _reference(name: str, p: np.ndarray) -> np.ndarray:
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    radial = np.hypot(x, y)
    if name == "sphere":
        return np.sqrt(x**2 + y**2 + (z - 1) ** 2) - 1
    if name == "cube":
        return _box(p, 0.8, 0.8, 1.6)
    if name == "cylinder":
        return np.maximum.reduce([radial - CYLINDER[0], -z, z - CYLINDER[1]])
    if name == "cone":
        radius, height = CONE
        return np.maximum.reduce([-z, z - height, radial - radius * (height - z) / height])
    if name == "torus":
        return np.hypot(radial - TORUS[0], z - TORUS[1]) - TORUS[1]
    if name == "capsule":
        half, radius = CAPSULE
        return np.sqrt((x - np.clip(x, -half, half)) ** 2 + y**2 + (z - radius) ** 2) - radius
    if name == "pyramid":
        slope = np.hypot(1.6, 0.95)
        return np.maximum.reduce([-z, (1.6 * np.abs(x) + 0.95 * z - 1.52) / slope,
                                  (1.6 * np.abs(y) + 0.95 * z - 1.52) / slope])
    if name == "holed_box":
        hx, hy, height, hole, hole_z = HOLED_BOX
        return np.maximum(_box(p, hx, hy, height), hole - np.hypot(x, z - hole_z))
    if name == "hex_prism":
        sides = [x * np.cos(a) + y * np.sin(a) - 0.9 * np.cos(np.pi / 6)
                 for a in np.arange(6) * np.pi / 3]
        return np.maximum.reduce(sides + [-z, z - 1.3])
    if name == "octahedron":
        return (np.abs(x) / 0.85 + np.abs(y) / 0.85 + np.abs(z - 1.1) / 1.1 - 1) * 0.5
    if name == "egg":
        a, _, c = EGG_RADII
        return np.sqrt((x / a) ** 2 + (y / a) ** 2 + ((z - c) / c) ** 2) - 1
    if name == "wedge":
        return np.maximum.reduce([-z, -1 - x, np.abs(y) - 0.7, (1.2 * x + 2 * z - 1.2) / 2.33])
    raise AssertionError(name)


def _rays(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    origins = rng.normal(size=(count, 3))
    origins = 4 * origins / np.linalg.norm(origins, axis=1, keepdims=True) + [0, 0, 0.8]
    targets = rng.uniform([-1.3, -1.3, -0.2], [1.3, 1.3, 2.3], size=(count, 3))
    directions = targets - origins
    # Non-unit directions, as the renderer passes them (scaled world rays).
    return origins, directions / np.linalg.norm(directions, axis=1, keepdims=True) * 1.7


@pytest.mark.parametrize("name", list(SHAPES))
def test_hit_is_the_first_surface_point_along_the_ray(name: str) -> None:
    shape = SHAPES[name]
    origins, directions = _rays(1500, seed=len(name))
    t = shape.hit(origins, directions)
    hit = np.isfinite(t)
    assert 0.2 < hit.mean() < 0.95
    points = origins + np.where(hit, t, 0)[:, None] * directions
    # On the surface, and just before it outside.
    assert np.abs(_reference(name, points[hit])).max() < 1e-7
    before = points[hit] - 1e-5 * directions[hit]
    assert (_reference(name, before) > -1e-9).all()
    # Dense samples: nothing clearly inside the solid before the hit (or anywhere on a miss).
    steps = np.linspace(0, 5.5, 1200)
    samples = origins[:, None] + steps[None, :, None] * directions[:, None]
    inside = _reference(name, samples) < -1e-4
    earlier = steps[None, :] < np.where(hit, t, np.inf)[:, None] - 1e-6
    assert not (inside & earlier).any()
    # The bounding sphere holds the shape (the renderer culls with it).
    distance = np.linalg.norm(points[hit] - np.asarray(shape.bound_center), axis=1)
    assert distance.max() <= shape.bound_radius + 1e-9


@pytest.mark.parametrize("name", list(SHAPES))
def test_normal_is_the_gradient_of_the_reference_and_faces_the_ray(name: str) -> None:
    shape = SHAPES[name]
    origins, directions = _rays(800, seed=100 + len(name))
    t = shape.hit(origins, directions)
    hit = np.isfinite(t)
    points = origins[hit] + t[hit, None] * directions[hit]
    normal = shape.normal(points)
    normal = normal / np.linalg.norm(normal, axis=1, keepdims=True)
    step = 1e-6
    gradient = np.stack([
        (_reference(name, points + step * e) - _reference(name, points - step * e)) / (2 * step)
        for e in np.eye(3)], axis=1)
    gradient /= np.linalg.norm(gradient, axis=1, keepdims=True)
    agree = np.einsum("ij,ij->i", normal, gradient) > 0.999
    # Only pixels exactly on an edge may differ (either face is right there).
    assert agree.mean() > 0.97
    assert (np.einsum("ij,ij->i", normal, directions[hit]) < 0).mean() > 0.99


def test_ray_starting_on_the_surface_does_not_hit_it_again() -> None:
    shape = SHAPES["sphere"]
    origin = np.array([[0.0, 0.0, 2.0 + 1e-6]])
    assert np.isinf(shape.hit(origin, np.array([[0.0, 0.0, 1.0]]))).all()
