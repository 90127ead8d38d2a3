"""The procedural 3-D world: the embedded default dataset, with exact labels for every task.

Scenes of textured, lit objects on a floor between walls, ray cast in NumPy from a seeded
generator. Each domain preset stands in for one of the paper's datasets (MuST sec. 4.1):
``objects`` (classification, ImageNet-like), ``clutter`` (detection, Objects365-like), ``scenes``
(segmentation, COCO-like), ``depth`` (depth), ``pool`` (the shared unlabeled set) and ``transfer``
(a shifted domain for the downstream tasks, surface normals included); ``video`` makes clips with
exact motion masks and optical flow instead of images (:mod:`must.world.video`).

>>> image = render_image("scenes", seed=0, index=3, size=64)
>>> image.rgb.shape, image.depth.dtype
((64, 64, 3), dtype('float32'))
"""

from __future__ import annotations

from must.world.clips import generate_clips
from must.world.domains import DOMAINS, DomainPreset
from must.world.render import SEGMENTATION_CLASSES, STUFF, WorldImage, make_scene, render_image
from must.world.scene import CATEGORIES, Scene
from must.world.sheet import sample_sheet
from must.world.video import VIDEO_DOMAINS, Clip, VideoFrame, make_clip, render_frame
from must.world.writer import generate, is_complete


__all__ = [
    "CATEGORIES", "DOMAINS", "SEGMENTATION_CLASSES", "STUFF", "VIDEO_DOMAINS", "Clip", "DomainPreset",
    "Scene", "VideoFrame", "WorldImage", "generate", "generate_clips", "is_complete", "make_clip",
    "make_scene", "render_frame", "render_image", "sample_sheet",
]
