"""Texture images for the world: photos shipped with scikit-image plus a few procedural ones.

Every texture is a float32 array in ``[0, 1]``-ish range, ``[T, T]`` (grey: a brightness pattern
that a colour tints, normalized to mean 1) or ``[T, T, 3]`` (colour: used as albedo). All are
made seamless by mirror-tiling, so a surface can repeat them without visible seams, and are built
once per process (``functools.cache``); procedural ones come from a fixed seed, so every process
builds the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
from scipy import ndimage
from skimage import data as skdata
from skimage import transform

SIDE = 128
"""Side of a texture before mirror-tiling (the stored array is ``2 * SIDE``)."""


def _photo(name: str) -> np.ndarray:
    image = getattr(skdata, name)()
    if image.ndim == 3:
        image = image[..., :3]
    side = min(image.shape[:2])
    top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
    square = image[top:top + side, left:left + side].astype(np.float32) / 255.0
    return transform.resize(square, (SIDE, SIDE), anti_aliasing=True).astype(np.float32)


def _noise(scale: float, seed: int, shape: tuple[int, ...] = (SIDE, SIDE)) -> np.ndarray:
    """Tileable smooth noise with unit standard deviation (wrap-around Gaussian blur)."""
    field = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    sigma = (scale, scale) + (0,) * (len(shape) - 2)
    smooth = ndimage.gaussian_filter(field, sigma, mode="wrap")
    return (smooth - smooth.mean()) / (smooth.std() + 1e-6)


def _planks() -> np.ndarray:
    rows = np.arange(SIDE)[:, None] * 6 // SIDE
    shade = np.random.default_rng(11).uniform(0.7, 1.2, 6)[rows]
    grain = ndimage.gaussian_filter(np.random.default_rng(12).standard_normal((SIDE, SIDE)),
                                    (0.6, 12), mode="wrap")
    gap = (np.arange(SIDE)[:, None] * 6 % SIDE) < 12
    return np.where(gap, 0.35, shade * (1 + 2.5 * grain)).astype(np.float32)


def _tiles() -> np.ndarray:
    cell = SIDE // 4
    i, j = np.mgrid[:SIDE, :SIDE]
    checker = ((i // cell + j // cell) % 2).astype(np.float32)
    grout = (i % cell < 3) | (j % cell < 3)
    return np.where(grout, 0.4, 0.85 + 0.3 * checker + 0.04 * _noise(2, 13))


def _wallpaper() -> np.ndarray:
    j = np.arange(SIDE)[None, :]
    stripes = 0.85 + 0.25 * (np.sin(2 * np.pi * j / (SIDE / 8)) > 0.3)
    return (stripes + 0.05 * _noise(3, 14)).astype(np.float32)


def _carpet() -> np.ndarray:
    colour = 0.5 + 0.2 * _noise(5, 15, (SIDE, SIDE, 3)) + 0.06 * _noise(1, 22, (SIDE, SIDE, 3))
    weave = 1 + 0.15 * np.sin(np.arange(SIDE) * np.pi / 2)[:, None, None]
    return np.clip(colour * weave, 0, 1).astype(np.float32)


def _sand() -> np.ndarray:
    i, j = np.mgrid[:SIDE, :SIDE]
    ripples = np.sin(2 * np.pi * (i / (SIDE / 10) + 0.8 * _noise(10, 16) / 6))
    return 1 + 0.18 * ripples + 0.08 * _noise(1, 17)


SOURCES: dict[str, Callable[[], np.ndarray]] = {
    "brick": lambda: _photo("brick"),
    "gravel": lambda: _photo("gravel"),
    "grass": lambda: _photo("grass"),
    "camera": lambda: _photo("camera"),
    "moon": lambda: _photo("moon"),
    "coins": lambda: _photo("coins"),
    "page": lambda: _photo("page"),
    "text": lambda: _photo("text"),
    "hubble": lambda: _photo("hubble_deep_field"),
    "astronaut": lambda: _photo("astronaut"),
    "chelsea": lambda: _photo("chelsea"),
    "coffee": lambda: _photo("coffee"),
    "planks": _planks,
    "tiles": _tiles,
    "wallpaper": _wallpaper,
    "plaster": lambda: 1 + 0.08 * _noise(6, 18) + 0.04 * _noise(1, 19),
    "concrete": lambda: 1 + 0.12 * _noise(2, 20) + 0.1 * _noise(12, 21),
    "carpet": _carpet,
    "sand": _sand,
}
"""Texture name -> builder. Photos come from ``skimage.data`` (shipped with the package)."""


@cache
def texture(name: str) -> np.ndarray:
    """The seamless texture called ``name``: ``[2T, 2T]`` grey (mean 1) or ``[2T, 2T, 3]``."""
    if name not in SOURCES:
        raise KeyError(f"unknown texture '{name}'; textures: {', '.join(SOURCES)}")
    image = np.asarray(SOURCES[name](), dtype=np.float32)
    if image.ndim == 2:
        image = np.clip(image / max(float(image.mean()), 1e-3), 0.15, 2.0)
    tiled = np.concatenate([image, image[::-1]], axis=0)
    return np.ascontiguousarray(np.concatenate([tiled, tiled[:, ::-1]], axis=1), np.float32)


def lookup(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Nearest-texel lookup with wrap-around; ``u`` runs along columns, ``v`` along rows, one
    texture repeat per unit."""
    side = image.shape[0]
    rows = (v * side).astype(np.int64) % side
    cols = (u * side).astype(np.int64) % side
    return image[rows, cols]


def hash01(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, salt: int = 0) -> np.ndarray:
    """A deterministic pseudo-random value in [0, 1) per integer lattice cell (for speckles)."""
    h = ix.astype(np.int64) * 374761393 + iy.astype(np.int64) * 668265263
    h = h + iz.astype(np.int64) * 1274126177 + salt * 1442695041
    h = (h ^ (h >> 13)) * 1103515245
    h = h ^ (h >> 16)
    return (h & 0xFFFF).astype(np.float32) / 65536.0
