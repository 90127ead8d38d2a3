"""What each object category looks like: a colour family and a surface pattern.

A category is told apart by its shape *and* its appearance (a beach-ball sphere, a brick cube, a
labelled can...), but each instance draws its colours with jitter around the family's hue, and
families overlap, so colour alone is not a perfect cue. Patterns are functions of the local
surface point and normal (solid textures, or photos from :mod:`must.world.textures` mapped by
planar / cylindrical projection), so they stick to the object as it turns.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from must.world.shapes import CYLINDER, TORUS
from must.world.textures import hash01, lookup, texture

Array = np.ndarray
HSV = tuple[float, float, float]


@dataclass(frozen=True)
class Look:
    primary: HSV
    secondary: HSV
    hue_jitter: float
    """Half-width of the per-instance hue jitter of the primary colour (before the domain's
    ``color_jitter`` factor)."""
    pattern: Callable[[Array, Array, Array, Array], Array]
    """(points, unit normals, colours [3, 3], texture offset [2]) -> albedo [M, 3]."""
    specular: float
    shininess: float


def _mix(colors: Array, weight: Array, first: int = 0, second: int = 1) -> Array:
    return colors[first] * (1 - weight[:, None]) + colors[second] * weight[:, None]


def _triplanar(name: str, p: Array, n: Array, offset: Array, frequency: float) -> Array:
    """Projects a texture along the normal's dominant axis (no UVs needed on any shape)."""
    axis = np.abs(n).argmax(axis=-1)
    u = np.where(axis == 0, p[:, 1], p[:, 0])
    v = np.where(axis == 2, p[:, 1], p[:, 2])
    return lookup(texture(name), u * frequency + offset[0], v * frequency + offset[1])


def _beach_ball(p: Array, n: Array, colors: Array, offset: Array) -> Array:
    segment = np.floor((np.arctan2(p[:, 1], p[:, 0]) / np.pi + 1 + offset[0]) * 3) % 2
    cap = np.abs(n[:, 2]) > 0.93
    return np.where(cap[:, None], colors[1], _mix(colors, segment))


def _brick(p: Array, n: Array, colors: Array, offset: Array) -> Array:
    return colors[0] * _triplanar("brick", p, n, offset, 0.45)[:, None]


def _can(p: Array, n: Array, colors: Array, offset: Array) -> Array:
    angle = np.arctan2(p[:, 1], p[:, 0]) / (2 * np.pi)
    label = lookup(texture("text"), angle * 2 + offset[0], p[:, 2] * 0.5 + offset[1])
    metal = (p[:, 2] < 0.25) | (p[:, 2] > CYLINDER[1] - 0.25) | (np.abs(n[:, 2]) > 0.5)
    return np.where(metal[:, None], colors[1], colors[0] * np.clip(label, 0.3, 1.3)[:, None])


def _stripes(p: Array, n: Array, colors: Array, offset: Array) -> Array:
    return _mix(colors, np.floor(p[:, 2] * 2.6 + offset[0] * 0.3) % 2)


def _donut(p: Array, n: Array, colors: Array, offset: Array) -> Array:
    icing = p[:, 2] > TORUS[1] * 1.25
    cells = np.floor(p * 9.0).astype(np.int64)
    sprinkle = hash01(cells[:, 0], cells[:, 1], cells[:, 2]) > 0.82
    top = np.where(sprinkle[:, None], colors[2], colors[0])
    return np.where(icing[:, None], top, colors[1])


def _pill(p: Array, n: Array, colors: Array, offset: Array) -> Array:
    return _mix(colors, (p[:, 0] > 0).astype(np.float64))


def _gravel(p: Array, n: Array, colors: Array, offset: Array) -> Array:
    return colors[0] * _triplanar("gravel", p, n, offset, 0.6)[:, None]


def _checker(p: Array, n: Array, colors: Array, offset: Array) -> Array:
    cells = np.floor(p * 2.2 + 1e-3).astype(np.int64).sum(axis=-1) % 2
    return _mix(colors, cells.astype(np.float64))


def _wood(p: Array, n: Array, colors: Array, offset: Array) -> Array:
    radius = np.hypot(p[:, 0], p[:, 1]) + 0.04 * np.sin(p[:, 2] * 7 + offset[0] * 6)
    rings = 0.5 + 0.5 * np.sin(radius * 28 + offset[1] * 6)
    return _mix(colors, rings**3)


def _gem(p: Array, n: Array, colors: Array, offset: Array) -> Array:
    facet = (np.sign(n[:, 0]) + 2 * np.sign(n[:, 1]) + 4 * np.sign(n[:, 2])) % 3
    return colors[0] * (0.8 + 0.15 * facet)[:, None]


def _speckles(p: Array, n: Array, colors: Array, offset: Array) -> Array:
    cells = np.floor(p * 11.0 + offset[0]).astype(np.int64)
    speck = hash01(cells[:, 0], cells[:, 1], cells[:, 2], salt=3) > 0.78
    return np.where(speck[:, None], colors[1], colors[0])


def _grass(p: Array, n: Array, colors: Array, offset: Array) -> Array:
    return colors[0] * _triplanar("grass", p, n, offset, 0.5)[:, None]


LOOKS: dict[str, Look] = {
    "sphere": Look((0.0, 0.8, 0.85), (0.12, 0.08, 0.95), 0.06, _beach_ball, 0.5, 30.0),
    "cube": Look((0.05, 0.65, 0.75), (0.0, 0.0, 0.0), 0.04, _brick, 0.05, 8.0),
    "cylinder": Look((0.6, 0.7, 0.8), (0.6, 0.05, 0.7), 0.08, _can, 0.45, 40.0),
    "cone": Look((0.07, 0.9, 0.95), (0.1, 0.05, 0.95), 0.04, _stripes, 0.2, 20.0),
    "torus": Look((0.9, 0.45, 0.95), (0.08, 0.65, 0.6), 0.2, _donut, 0.25, 20.0),
    "capsule": Look((0.5, 0.75, 0.85), (0.0, 0.03, 0.95), 0.5, _pill, 0.6, 60.0),
    "pyramid": Look((0.12, 0.45, 0.85), (0.0, 0.0, 0.0), 0.03, _gravel, 0.05, 8.0),
    "holed_box": Look((0.33, 0.7, 0.7), (0.33, 0.3, 0.2), 0.08, _checker, 0.1, 10.0),
    "hex_prism": Look((0.09, 0.6, 0.8), (0.07, 0.75, 0.4), 0.03, _wood, 0.1, 10.0),
    "octahedron": Look((0.68, 0.75, 0.9), (0.0, 0.0, 0.0), 0.16, _gem, 0.9, 80.0),
    "egg": Look((0.11, 0.22, 0.92), (0.06, 0.6, 0.35), 0.03, _speckles, 0.3, 25.0),
    "wedge": Look((0.3, 0.55, 0.75), (0.0, 0.0, 0.0), 0.06, _grass, 0.05, 8.0),
}
"""Category name -> look; keys in the same order as :data:`must.world.shapes.SHAPES`."""


def sample_colors(look: Look, jitter: float, rng: np.random.Generator) -> Array:
    """Three RGB colours (primary, secondary, accent) of one instance of a category."""
    def jittered(hsv: HSV, hue_width: float) -> list[float]:
        hue = (hsv[0] + rng.uniform(-1, 1) * hue_width * jitter) % 1.0
        saturation = min(max(hsv[1] + rng.uniform(-0.15, 0.15) * jitter, 0.0), 1.0)
        value = min(max(hsv[2] + rng.uniform(-0.12, 0.12) * jitter, 0.05), 1.0)
        return list(colorsys.hsv_to_rgb(hue, saturation, value))

    accent = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
    return np.array([jittered(look.primary, look.hue_jitter),
                     jittered(look.secondary, 0.04), list(accent)])
