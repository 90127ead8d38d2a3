"""Short clips of the procedural world, with exact motion masks and optical flow.

Doersch & Zisserman (2017, sec. 2) train a fourth self-supervised task, motion segmentation, on
video: from one frame, predict which pixels will move (their targets come from Pathak et al.
2017's segmentation of moving objects in video). The world becomes a video source by giving some
objects of a scene a velocity (and sometimes the camera a small one) and rendering the scene at
``frames`` successive instants. Because the renderer knows which object covers each pixel and
where each pixel's surface point is, the labels are exact rather than estimated:

* motion mask of frame ``t``: the pixels whose object moves (its instance id is a moving one);
  camera motion moves every pixel in the image but no object, so it is not in the mask (as for
  Pathak et al., whose masks are the independently moving objects);
* optical flow of frame ``t``: for every pixel, the image displacement of its surface point from
  frame ``t`` to ``t + 1``: the point moved with its object (rigid translation) and projected
  by the camera of frame ``t + 1``. Exact for translation; the background is static, so its flow
  is zero unless the camera moves; the sky is at infinity, so a translating camera leaves it
  still.

Which objects move depends on their category (round things roll, :attr:`VideoPreset.mobile`), so
that, as with people, animals and cars in real video, one frame says what is likely to move.
Objects translate in the floor plane (velocity ``[vx, vy, 0]``, so they keep resting on it),
the camera along any 3-D direction without turning. A clip depends only on ``(seed, index,
size)`` (:func:`make_clip`), like every image of the world.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from must.world.domains import DomainPreset, get_domain
from must.world.render import WorldImage, camera_rays, render_scene
from must.world.scene import Scene, sample_scene, scene_rng
from must.world.shapes import SHAPES

Array = np.ndarray
Range = tuple[float, float]


@dataclass(frozen=True)
class VideoPreset:
    """How clips are drawn: the scenes of ``scene_domain``, then motion."""

    name: str
    description: str
    scene_domain: str
    """The image domain each clip's first frame is drawn from."""
    frames: int
    """Default number of frames of a clip."""
    mobile: tuple[str, ...]
    """Categories that usually move (round things roll): what moves depends on what an object is,
    as people, animals and cars move in real video, so a single frame says what will move."""
    mobile_probability: float
    """Chance that an object of a ``mobile`` category moves."""
    moving_probability: float
    """Chance that any other object moves. At least one object of every clip moves (the largest
    in view, if no other does)."""
    speed: Range
    """Object speed in bounding radii per frame (so the apparent motion scales with the
    apparent size, which every preset controls)."""
    camera_motion_probability: float
    camera_speed: Range
    """Metres per frame, when the camera moves."""


VIDEO_DOMAINS: dict[str, VideoPreset] = {
    "video": VideoPreset(
        name="video", description="short clips of rooms in which some objects move (and sometimes "
        "the camera), with exact motion masks and optical flow, for motion segmentation",
        scene_domain="scenes", frames=8,
        mobile=("sphere", "cylinder", "torus", "capsule", "egg"), mobile_probability=0.85,
        moving_probability=0.15, speed=(0.15, 0.35),
        camera_motion_probability=0.3, camera_speed=(0.005, 0.02)),
}
"""Video domains by name (one explicit dict, beside :data:`~must.world.domains.DOMAINS`)."""


@dataclass(frozen=True, eq=False)
class Clip:
    """A scene at frame 0 and how it moves: ``position(t) = position + t * velocity``."""

    scene: Scene
    velocities: Array
    """float64 [N, 3]: metres per frame of each object (zero: static)."""
    camera_velocity: Array
    """float64 [3]: metres per frame of the camera (it translates without turning)."""

    @property
    def moving_instances(self) -> Array:
        """Instance ids (1 + object index, as in :attr:`WorldImage.instances`) of moving objects."""
        return 1 + np.flatnonzero(np.abs(self.velocities).sum(axis=1) > 0)

    def at(self, frame: int) -> Scene:
        """The scene at instant ``frame``."""
        objects = tuple(dataclasses.replace(obj, position=obj.position + frame * velocity)
                        for obj, velocity in zip(self.scene.objects, self.velocities, strict=True))
        camera = dataclasses.replace(self.scene.camera,
                                     eye=self.scene.camera.eye + frame * self.camera_velocity)
        return dataclasses.replace(self.scene, camera=camera, objects=objects)


@dataclass(eq=False)
class VideoFrame:
    """One rendered frame of a clip with its exact motion labels."""

    image: WorldImage
    motion: Array
    """bool [H, W]: the pixel shows a moving object."""
    flow: Array
    """float32 [H, W, 2]: (dx, dy) pixels to the pixel's surface point in the next frame; NaN
    where that point would be behind the next frame's camera."""


def _heading(rng: np.random.Generator) -> Array:
    angle = rng.uniform(0, 2 * math.pi)
    return np.array([math.cos(angle), math.sin(angle), 0.0])


def _velocities(scene: Scene, preset: VideoPreset, largest: int, rng: np.random.Generator) -> Array:
    """Object velocities in the floor plane; ``largest`` (the object with most pixels in view)
    moves when no other does."""
    velocities = np.zeros((len(scene.objects), 3))
    for k, obj in enumerate(scene.objects):
        chance = preset.mobile_probability if obj.shape_name in preset.mobile else preset.moving_probability
        moves = rng.uniform() < chance
        heading, speed = _heading(rng), rng.uniform(*preset.speed)
        velocities[k] = heading * speed * SHAPES[obj.shape_name].bound_radius * obj.scale * moves
    if not velocities.any():
        obj = scene.objects[largest]
        velocities[largest] = _heading(rng) * preset.speed[0] * SHAPES[obj.shape_name].bound_radius * obj.scale
    return velocities


def _camera_velocity(preset: VideoPreset, rng: np.random.Generator) -> Array:
    moves = rng.uniform() < preset.camera_motion_probability
    direction = rng.standard_normal(3)
    direction[2] *= 0.3  # mostly sideways and forward, as a hand-held or dolly camera moves
    speed = rng.uniform(*preset.camera_speed)
    return direction / np.linalg.norm(direction) * speed if moves else np.zeros(3)


def make_clip(seed: int, index: int, size: int, domain: str = "video") -> Clip:
    """Clip ``index`` of the dataset ``(domain, seed)``: a scene of the preset's image domain with
    at least one visible object, then object and camera velocities, all from one generator."""
    preset = VIDEO_DOMAINS[domain]
    scene_preset: DomainPreset = get_domain(preset.scene_domain)
    rng = scene_rng(domain, seed, index)
    for _ in range(16):
        scene = sample_scene(scene_preset, size, rng)
        image = render_scene(scene)
        if image.label >= 0:
            areas = np.bincount(image.instances.ravel(), minlength=len(scene.objects) + 1)[1:]
            velocities = _velocities(scene, preset, int(np.argmax(areas)), rng)
            return Clip(scene, velocities, _camera_velocity(preset, rng))
    raise RuntimeError(f"no visible object in 16 scenes of {domain} seed {seed} index {index}")


def motion_mask(clip: Clip, image: WorldImage) -> Array:
    """bool [H, W]: pixels of ``image`` (a frame of ``clip``) that show a moving object."""
    return np.isin(image.instances, clip.moving_instances)


def optical_flow(clip: Clip, frame: int, image: WorldImage) -> Array:
    """float32 [H, W, 2] flow from frame ``frame`` (rendered as ``image``) to ``frame + 1``: each
    pixel's 3-D point moved with its object and projected by the next camera, minus the same
    point projected by this frame's camera (the pixel centre, to rounding: a static point under a
    static camera has a flow of exactly zero)."""
    camera = clip.at(frame).camera
    directions = camera_rays(camera.size, camera.focal) @ camera.rotation.T
    distance = image.distance.reshape(-1)
    hit = np.isfinite(distance)
    owner = image.instances.reshape(-1).astype(np.int64) - 1
    points = camera.eye + np.where(hit, distance, 0.0)[:, None] * directions
    moved = points + np.where((owner >= 0)[:, None], clip.velocities[np.maximum(owner, 0)], 0.0)
    # A point at infinity (the sky) keeps its direction under translation: project the direction.
    before = np.where(hit[:, None], points - camera.eye, directions) @ camera.rotation
    after = np.where(hit[:, None], moved - (camera.eye + clip.camera_velocity), directions) @ camera.rotation
    with np.errstate(divide="ignore", invalid="ignore"):
        flow = camera.focal * (after[:, :2] / after[:, 2:3] - before[:, :2] / before[:, 2:3])
    flow[after[:, 2] <= 1e-9] = np.nan
    return flow.reshape(camera.size, camera.size, 2).astype(np.float32)


def render_frame(clip: Clip, frame: int) -> VideoFrame:
    """Frame ``frame`` of ``clip`` with its exact motion mask and optical flow."""
    image = render_scene(clip.at(frame))
    return VideoFrame(image, motion_mask(clip, image), optical_flow(clip, frame, image))
