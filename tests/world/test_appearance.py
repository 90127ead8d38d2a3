"""Object looks: every pattern gives a valid albedo on its shape, and colours are jittered per
instance so that colour alone does not name the category."""

import colorsys

import numpy as np
import pytest

from must.world.appearance import LOOKS, sample_colors
from must.world.shapes import SHAPES


def test_every_category_has_a_look() -> None:
    assert list(LOOKS) == list(SHAPES)


@pytest.mark.parametrize("name", list(SHAPES))
def test_pattern_gives_a_varied_albedo_on_the_surface(name: str) -> None:
    rng = np.random.default_rng(0)
    origins = rng.normal(size=(600, 3)) * 0.05 + [0.0, -4.0, 1.0]
    targets = rng.uniform([-1, -1, 0], [1, 1, 2], size=(600, 3))
    directions = targets - origins
    t = SHAPES[name].hit(origins, directions)
    points = (origins + t[:, None] * directions)[np.isfinite(t)]
    normals = SHAPES[name].normal(points)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    colors = sample_colors(LOOKS[name], 1.0, rng)
    albedo = LOOKS[name].pattern(points, normals, colors, np.array([0.3, 0.6]))
    assert albedo.shape == (len(points), 3) and np.isfinite(albedo).all()
    assert albedo.min() >= 0 and albedo.max() <= 2.0
    if name != "octahedron":  # a flat-coloured gem: only its facets differ
        assert albedo.std(axis=0).max() > 0.02


def test_instance_colours_jitter_around_the_family_hue() -> None:
    rng = np.random.default_rng(1)
    look = LOOKS["cylinder"]
    primaries = np.array([sample_colors(look, 1.0, rng)[0] for _ in range(200)])
    hues = np.array([colorsys.rgb_to_hsv(*c)[0] for c in primaries])
    offset = (hues - look.primary[0] + 0.5) % 1 - 0.5
    assert np.abs(offset).max() <= look.hue_jitter + 1e-6
    assert offset.std() > look.hue_jitter / 3  # really spread, not one colour
    assert len(np.unique(np.round(primaries, 3), axis=0)) == 200
