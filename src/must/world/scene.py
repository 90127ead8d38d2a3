"""Sampling one scene of a domain: camera, sun, room, and objects resting on the floor.

World frame: metres, ``z`` up, the floor is ``z = 0``. Camera frame: OpenCV (x right, y down,
z forward). A scene is drawn from a :class:`~must.world.domains.DomainPreset` with one NumPy
generator, so ``(domain, seed, index)`` fixes it completely (see :func:`scene_rng`).

Objects are placed where the camera sees them: a centre pixel and an apparent size are drawn
first, then the world position and scale that produce them are solved for exactly, which keeps
boxes at a controlled pixel size (>= 6 px at 64 px for the smallest presets) at any resolution.
"""

from __future__ import annotations

import colorsys
import math
import zlib
from dataclasses import dataclass

import numpy as np

from must.world.appearance import LOOKS, sample_colors
from must.world.domains import DomainPreset
from must.world.shapes import SHAPES

Array = np.ndarray
CATEGORIES: tuple[str, ...] = tuple(SHAPES)
"""Object categories; the index is the class id."""
MAX_FLOOR_DISTANCE = 50.0
"""The open floor ends here (beyond: sky); keeps depth inside 16-bit millimetres."""

STUFF_TINTS: dict[str, tuple[float, float, float]] = {
    "planks": (0.08, 0.55, 0.7), "tiles": (0.1, 0.12, 0.85), "gravel": (0.09, 0.2, 0.7),
    "grass": (0.27, 0.6, 0.6), "concrete": (0.6, 0.05, 0.7), "brick": (0.03, 0.55, 0.7),
    "plaster": (0.12, 0.15, 0.9), "wallpaper": (0.55, 0.3, 0.85), "camera": (0.1, 0.1, 0.9),
    "moon": (0.08, 0.1, 0.8), "coins": (0.12, 0.4, 0.8), "sand": (0.11, 0.45, 0.85),
    "page": (0.13, 0.15, 0.95), "text": (0.0, 0.0, 0.9),
}
"""HSV tint of each grey stuff texture (colour textures are only scaled in brightness)."""


@dataclass(frozen=True, eq=False)
class Camera:
    eye: Array
    rotation: Array
    """Columns: the camera's x (right), y (down), z (forward) axes in world coordinates."""
    focal: float
    size: int

    @property
    def intrinsics(self) -> Array:
        """Pinhole K for pixel centres at integer + 0.5 (principal point at the image centre)."""
        c = self.size / 2
        return np.array([[self.focal, 0, c], [0, self.focal, c], [0, 0, 1]], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class SceneObject:
    category: int
    position: Array
    """Floor contact point (x, y, 0) of the shape's local origin."""
    yaw: float
    scale: float
    """World metres per local shape unit."""
    colors: Array
    offset: Array
    """Texture offset, so two instances do not show the same patch of a photo."""

    @property
    def shape_name(self) -> str:
        return CATEGORIES[self.category]


@dataclass(frozen=True, eq=False)
class Surface:
    texture: str
    tint: Array
    period: float
    """Metres per texture repeat."""
    offset: Array


@dataclass(frozen=True, eq=False)
class Scene:
    camera: Camera
    sun: Array
    """Unit vector towards the sun."""
    sun_color: Array
    ambient: Array
    sky: Array
    """[2, 3]: horizon and zenith colours."""
    room: tuple[float, float, float, float, float] | None
    """(x_min, x_max, y_min, y_max, wall height), or None for an open floor."""
    floor: Surface
    wall: Surface
    objects: tuple[SceneObject, ...]


def scene_rng(domain: str, seed: int, index: int) -> np.random.Generator:
    """The generator of image ``index``: independent of every other index (parallel, resumable)."""
    return np.random.default_rng([seed, zlib.crc32(domain.encode()), index])


def focal_length(fov_degrees: float, size: int) -> float:
    return size / 2 / math.tan(math.radians(fov_degrees) / 2)


def look_at(eye: Array, forward: Array) -> Array:
    """Camera rotation (columns right, down, forward) for a view direction; world z is up."""
    forward = forward / np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(forward, right), forward], axis=1)


def _direction(pitch_degrees: float, yaw: float) -> Array:
    pitch = math.radians(pitch_degrees)
    return np.array([math.cos(pitch) * math.cos(yaw), math.cos(pitch) * math.sin(yaw),
                     -math.sin(pitch)])


def _pixel_ray(camera: Camera, u: float, v: float) -> Array:
    """World direction (unit) through the normalized image point (u, v)."""
    local = np.array([(u - 0.5) * camera.size / camera.focal,
                      (v - 0.5) * camera.size / camera.focal, 1.0])
    ray = camera.rotation @ local
    return ray / np.linalg.norm(ray)


def _place(camera: Camera, category: int, u: float, v: float, apparent: float
           ) -> tuple[Array, float] | None:
    """Solves position and scale so the bounding sphere is centred on (u, v) with the given
    apparent diameter: centre = eye + D ray at height c_z s, and a W = 2 rho s f / depth."""
    shape = SHAPES[CATEGORIES[category]]
    ray = _pixel_ray(camera, u, v)
    cos_view = float(ray @ camera.rotation[:, 2])
    k = apparent * camera.size * cos_view / (2 * shape.bound_radius * camera.focal)
    denominator = shape.bound_center[2] * k - ray[2]
    if denominator <= 1e-6:
        return None
    distance = camera.eye[2] / denominator
    center = camera.eye + distance * ray
    return np.array([center[0], center[1], 0.0]), k * distance


def _fits(position: Array, radius: float, taken: list[tuple[float, float, float]]) -> bool:
    """No overlap with the footprints (x, y, radius) already on the floor."""
    x, y = float(position[0]), float(position[1])
    return all(math.hypot(x - px, y - py) > 1.05 * (radius + r) for px, py, r in taken)


def _new_object(category: int, position: Array, scale: float, preset: DomainPreset,
                rng: np.random.Generator) -> SceneObject:
    look = LOOKS[CATEGORIES[category]]
    return SceneObject(category, position, float(rng.uniform(0, 2 * math.pi)), scale,
                       sample_colors(look, preset.color_jitter, rng), rng.uniform(0, 1, 2))


def _focused(preset: DomainPreset, size: int, rng: np.random.Generator
             ) -> tuple[Camera, list[SceneObject]]:
    """One object, the camera looking at it from a distance that gives the apparent size."""
    category = int(rng.integers(len(CATEGORIES)))
    shape = SHAPES[CATEGORIES[category]]
    radius = rng.uniform(*preset.object_size)
    scale = radius / shape.bound_radius
    focal = focal_length(preset.fov_degrees, size)
    depth = 2 * radius * focal / (rng.uniform(*preset.apparent_size) * size)
    center = np.array([0.0, 0.0, shape.bound_center[2] * scale])
    forward = _direction(rng.uniform(*preset.camera_pitch), rng.uniform(0, 2 * math.pi))
    eye = center - depth * forward
    rotation = look_at(eye, forward)
    u0, u1, v0, v1 = preset.center_region
    shift = (rng.uniform(u0, u1) - 0.5, rng.uniform(v0, v1) - 0.5)
    target = center - depth * size / focal * (shift[0] * rotation[:, 0] + shift[1] * rotation[:, 1])
    camera = Camera(eye, look_at(eye, target - eye), focal, size)
    return camera, [_new_object(category, np.zeros(3), scale, preset, rng)]


def _spread(preset: DomainPreset, size: int, rng: np.random.Generator
            ) -> tuple[Camera, list[SceneObject]]:
    """A camera looking down at the floor; objects placed where it sees them, not overlapping."""
    eye = np.array([0.0, 0.0, rng.uniform(*preset.camera_height)])
    forward = _direction(rng.uniform(*preset.camera_pitch), rng.uniform(0, 2 * math.pi))
    camera = Camera(eye, look_at(eye, forward), focal_length(preset.fov_degrees, size), size)
    wanted = int(rng.integers(preset.objects[0], preset.objects[1] + 1))
    taken = [(0.0, 0.0, 0.3)]
    objects: list[SceneObject] = []
    u0, u1, v0, v1 = preset.center_region
    for _ in range(12 * wanted):
        if len(objects) == wanted:
            break
        category = int(rng.integers(len(CATEGORIES)))
        u, v = rng.uniform(u0, u1), rng.uniform(v0, v1)
        placed = _place(camera, category, u, v, rng.uniform(*preset.apparent_size))
        if placed is None:
            continue
        position, scale = placed
        shape = SHAPES[CATEGORIES[category]]
        radius = shape.bound_radius * scale
        if not preset.object_size[0] <= radius <= preset.object_size[1]:
            continue
        if np.hypot(*position[:2]) > MAX_FLOOR_DISTANCE / 2:
            continue
        if _fits(position, shape.footprint * scale, taken):
            taken.append((float(position[0]), float(position[1]), shape.footprint * scale))
            objects.append(_new_object(category, position, scale, preset, rng))
    return camera, objects


def _surface(names: tuple[str, ...], rng: np.random.Generator) -> Surface:
    name = names[int(rng.integers(len(names)))]
    if name in STUFF_TINTS:
        hue, saturation, value = STUFF_TINTS[name]
        tint = colorsys.hsv_to_rgb((hue + rng.uniform(-0.05, 0.05)) % 1,
                                   float(np.clip(saturation + rng.uniform(-0.1, 0.1), 0, 1)),
                                   float(np.clip(value + rng.uniform(-0.12, 0.1), 0, 1)))
    else:
        tint = (rng.uniform(0.75, 1.05),) * 3
    return Surface(name, np.array(tint), float(rng.uniform(1.0, 3.0)), rng.uniform(0, 1, 2))


def _room(preset: DomainPreset, camera: Camera, objects: list[SceneObject],
          rng: np.random.Generator) -> tuple[float, float, float, float, float] | None:
    if rng.uniform() >= preset.indoor_probability:
        return None
    points = [(camera.eye[0], camera.eye[1], 0.3)] + [
        (o.position[0], o.position[1], SHAPES[o.shape_name].footprint * o.scale) for o in objects]
    margins = rng.uniform(*preset.room_margin, size=4)
    x_min = min(x - r for x, _, r in points) - margins[0]
    x_max = max(x + r for x, _, r in points) + margins[1]
    y_min = min(y - r for _, y, r in points) - margins[2]
    y_max = max(y + r for _, y, r in points) + margins[3]
    return x_min, x_max, y_min, y_max, float(rng.uniform(*preset.wall_height))


def sample_scene(preset: DomainPreset, size: int, rng: np.random.Generator) -> Scene:
    """One scene of ``preset`` rendered at ``size`` x ``size`` pixels."""
    while True:
        camera, objects = (_focused if preset.focus else _spread)(preset, size, rng)
        if objects:
            break
    room = _room(preset, camera, objects, rng)
    elevation = math.radians(rng.uniform(*preset.sun_elevation))
    azimuth = rng.uniform(0, 2 * math.pi)
    sun = np.array([math.cos(elevation) * math.cos(azimuth),
                    math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
    warmth = rng.uniform(*preset.warmth)
    sun_color = rng.uniform(*preset.sun_intensity) * np.clip(
        np.array([1 + 0.3 * warmth, 1 + 0.02 * warmth, 1 - 0.45 * warmth]), 0.2, 1.5)
    sky = np.asarray(preset.sky, dtype=np.float64)
    ambient = rng.uniform(*preset.ambient) * sky.mean(axis=0) / sky.mean(axis=0).max()
    return Scene(camera, sun, sun_color, ambient, sky, room,
                 _surface(preset.floor_textures, rng), _surface(preset.wall_textures, rng),
                 tuple(objects))
