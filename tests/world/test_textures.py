"""Textures: every one loads offline (scikit-image ships the photos) and tiles seamlessly."""

import numpy as np

from must.world.textures import SOURCES, hash01, lookup, texture


def test_every_texture_loads_offline_and_tiles() -> None:
    for name in SOURCES:
        image = texture(name)
        assert image.shape[0] == image.shape[1] and np.isfinite(image).all()
        # Mirror-tiled: the first and last rows and columns meet without a seam.
        assert np.array_equal(image[0], image[-1]) and np.array_equal(image[:, 0], image[:, -1])


def test_lookup_wraps_and_hash_is_deterministic() -> None:
    image = texture("brick")
    u, v = np.array([0.25, 1.25, -0.75]), np.array([0.5, 1.5, 2.5])
    values = lookup(image, u, v)
    assert values[0] == values[1] == values[2]
    cells = np.arange(-50, 50)
    first, second = hash01(cells, cells * 3, cells * 7), hash01(cells, cells * 3, cells * 7)
    assert np.array_equal(first, second) and 0 <= first.min() and first.max() < 1
    assert first.std() > 0.2  # spread over [0, 1), not constant
