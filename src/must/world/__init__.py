"""The procedural 3-D world: the embedded default dataset, with exact labels for every task.

Scenes of textured, lit objects on a floor between walls, ray cast in NumPy from a seeded
generator (SPEC B3). Each domain preset stands in for one of the paper's datasets (MuST sec. 4.1):
``objects`` (classification, ImageNet-like), ``clutter`` (detection, Objects365-like), ``scenes``
(segmentation, COCO-like), ``depth`` (depth), ``pool`` (the shared unlabeled set) and ``transfer``
(a shifted domain for the downstream tasks, surface normals included).

>>> image = render_image("scenes", seed=0, index=3, size=64)
>>> image.rgb.shape, image.depth.dtype
((64, 64, 3), dtype('float32'))
"""

from __future__ import annotations

from must.world.domains import DOMAINS, DomainPreset, get_domain
from must.world.render import SEGMENTATION_CLASSES, STUFF, WorldImage, render_scene
from must.world.scene import CATEGORIES, Scene, sample_scene, scene_rng
from must.world.sheet import sample_sheet
from must.world.writer import generate, is_complete


def render_image(domain: str, seed: int, index: int, size: int) -> WorldImage:
    """Image ``index`` of the dataset ``(domain, seed)`` at ``size`` x ``size`` pixels. Depends on
    nothing but its arguments: the same call gives the same bytes in any process."""
    return _render(domain, seed, index, size)[1]


def make_scene(domain: str, seed: int, index: int, size: int) -> Scene:
    """The scene behind :func:`render_image` (camera, light, objects), e.g. for inspection."""
    return _render(domain, seed, index, size)[0]


def _render(domain: str, seed: int, index: int, size: int) -> tuple[Scene, WorldImage]:
    preset, rng = get_domain(domain, index), scene_rng(domain, seed, index)
    # Every object is placed in view, but one could in principle hide entirely behind another;
    # then the image has no class, and the scene is drawn again from the same generator.
    for _ in range(16):
        scene = sample_scene(preset, size, rng)
        image = render_scene(scene)
        if image.label >= 0:
            return scene, image
    raise RuntimeError(f"no visible object in 16 scenes of {domain} seed {seed} index {index}")


__all__ = [
    "CATEGORIES", "DOMAINS", "SEGMENTATION_CLASSES", "STUFF", "DomainPreset", "Scene",
    "WorldImage", "generate", "is_complete", "make_scene", "render_image", "sample_sheet",
]
