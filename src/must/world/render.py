"""Vectorized ray casting of a scene: exact ground truth for every task, and a lit RGB image.

One primary ray per pixel (through the pixel centre, no anti-aliasing, so every label is exact
for the pixel it describes) is intersected with the floor, the room's walls and every object
(analytic shapes, :mod:`must.world.shapes`). The nearest hit gives depth, normal, semantic class
and instance; a shadow ray toward the sun from every lit point gives cast shadows; Lambert
diffuse + hemisphere ambient + Blinn-Phong highlights give the colour. Objects are culled per ray
by their bounding sphere, so the cost grows with the pixels they cover, not with the image.
Objects cast shadows on everything; walls receive shadows but cast none (an open-roofed room).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from must.world.appearance import LOOKS
from must.world.domains import get_domain
from must.world.scene import (CATEGORIES, MAX_FLOOR_DISTANCE, Camera, Scene, SceneObject, Surface,
                              sample_scene, scene_rng)
from must.world.shapes import SHAPES
from must.world.textures import lookup, texture

Array = np.ndarray
STUFF: tuple[str, ...] = ("floor", "wall", "sky")
"""Background classes; their segmentation ids come first."""
FLOOR, WALL, SKY = range(3)


@dataclass(eq=False)
class WorldImage:
    """One rendered image and its exact labels (pixel (row, col) is the ray through its centre)."""

    rgb: Array
    """uint8 [H, W, 3]."""
    label: int
    """Category of the object with the most visible pixels (image-level class)."""
    boxes: Array
    """float32 [N, 4] xyxy pixels: the tight box of each visible instance (x1 = last col + 1)."""
    box_labels: Array
    """int64 [N] category of each box."""
    segmentation: Array
    """uint8 [H, W]: index into ``STUFF + CATEGORIES``."""
    depth: Array
    """float32 [H, W] metres along the optical axis (z-depth); 0 where the ray hits nothing."""
    normals: Array
    """float32 [H, W, 3] unit normals in the camera frame (x right, y down, z forward); 0 = none."""
    instances: Array
    """uint16 [H, W]: 1 + index of the object in the scene; 0 for stuff."""
    box_instances: Array
    """uint16 [N]: the instance id each box was measured from."""
    intrinsics: Array
    """float64 [3, 3] pinhole K of the camera (pixel centres at integer + 0.5)."""
    distance: Array
    """float64 [H, W] metres along each pixel's ray to the surface it shows; inf for the sky
    (the exact 3-D point behind every pixel, e.g. for optical flow)."""


@cache
def camera_rays(size: int, focal: float) -> Array:
    """Unit ray directions in the camera frame, [size * size, 3], row-major over pixels."""
    centers = (np.arange(size) + 0.5 - size / 2) / focal
    y, x = np.meshgrid(centers, centers, indexing="ij")
    rays = np.stack([x.ravel(), y.ravel(), np.ones(size * size)], axis=1)
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    rays.setflags(write=False)
    return rays


def _yaw_matrix(yaw: float) -> Array:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


@dataclass(frozen=True, eq=False)
class _Placed:
    """An object's world transform: ``world = position + rotation @ local * scale``."""

    obj: SceneObject
    rotation: Array
    center: Array
    radius: float

    @staticmethod
    def of(obj: SceneObject) -> _Placed:
        shape = SHAPES[obj.shape_name]
        rotation = _yaw_matrix(obj.yaw)
        center = obj.position + rotation @ np.asarray(shape.bound_center) * obj.scale
        return _Placed(obj, rotation, center, shape.bound_radius * obj.scale)

    def to_local(self, points: Array) -> Array:
        return (points - self.obj.position) @ self.rotation / self.obj.scale

    def hit(self, origins: Array, directions: Array) -> Array:
        """World distance to the first hit (directions unit); scaled local rays keep t in metres."""
        local_o = self.to_local(origins)
        local_d = directions @ self.rotation / self.obj.scale
        local_o, local_d = np.broadcast_arrays(local_o, local_d)
        return SHAPES[self.obj.shape_name].hit(local_o, local_d)

    def screen_pixels(self, camera: Camera) -> Array:
        """Flat indices of the pixels whose rays may hit the object: the image rectangle that
        contains the projection of its bounding sphere (conservative: box corners)."""
        size = camera.size
        x, y, z = (self.center - camera.eye) @ camera.rotation
        r = self.radius
        if z - r <= 1e-3:
            return np.arange(size * size)
        f, c = camera.focal, size / 2
        near, far = 1 / (z - r), 1 / (z + r)
        u0 = f * min((x - r) * near, (x - r) * far) + c
        u1 = f * max((x + r) * near, (x + r) * far) + c
        v0 = f * min((y - r) * near, (y - r) * far) + c
        v1 = f * max((y + r) * near, (y + r) * far) + c
        cols = np.arange(max(int(u0 - 0.5), 0), min(int(u1 + 0.5) + 1, size))
        rows = np.arange(max(int(v0 - 0.5), 0), min(int(v1 + 0.5) + 1, size))
        return (rows[:, None] * size + cols[None, :]).ravel()


def trace_primary(placed: list[_Placed], camera: Camera, directions: Array
                  ) -> tuple[Array, Array]:
    """Nearest object hit per pixel ray: (distance, object index or -1)."""
    count = directions.shape[0]
    best = np.full(count, np.inf)
    owner = np.full(count, -1, dtype=np.int64)
    origin = camera.eye[None]
    for k, item in enumerate(placed):
        index = item.screen_pixels(camera)
        if index.size == 0:
            continue
        t = item.hit(origin, directions[index])
        closer = t < best[index]
        best[index[closer]] = t[closer]
        owner[index[closer]] = k
    return best, owner


def shadowed(placed: list[_Placed], origins: Array, sun: Array) -> Array:
    """Whether each ray from ``origins`` toward the sun hits an object. Rays are culled per
    object in the plane perpendicular to the sun, where the bounding sphere is a disc."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(sun[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    first = np.cross(sun, helper)
    first /= np.linalg.norm(first)
    basis = np.stack([first, np.cross(sun, first), sun], axis=1)
    projected = origins @ basis
    blocked = np.zeros(origins.shape[0], dtype=bool)
    for item in placed:
        a, b, c = item.center @ basis
        near = (projected[:, 0] - a) ** 2 + (projected[:, 1] - b) ** 2 <= item.radius**2
        index = np.flatnonzero(near & (projected[:, 2] < c + item.radius) & ~blocked)
        if index.size:
            blocked[index[np.isfinite(item.hit(origins[index], sun[None]))]] = True
    return blocked


def _background(scene: Scene, directions: Array) -> tuple[Array, Array, Array, Array]:
    """Floor, walls and sky per ray: (distance, stuff class, world normal, texture coords)."""
    eye, count = scene.camera.eye, directions.shape[0]
    dz = directions[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(dz < -1e-9, -eye[2] / dz, np.inf)
    t_floor[t_floor * np.hypot(directions[:, 0], directions[:, 1]) > MAX_FLOOR_DISTANCE] = np.inf
    points = eye + np.where(np.isfinite(t_floor), t_floor, 0.0)[:, None] * directions
    t = t_floor.copy()
    kind = np.where(np.isfinite(t_floor), FLOOR, SKY)
    normal = np.zeros((count, 3))
    normal[:, 2] = 1.0
    coords = points[:, :2].copy()
    if scene.room is not None:
        x0, x1, y0, y1, height = scene.room
        with np.errstate(divide="ignore", invalid="ignore"):
            tx = np.where(directions[:, 0] > 0, (x1 - eye[0]) / directions[:, 0],
                          (x0 - eye[0]) / directions[:, 0])
            ty = np.where(directions[:, 1] > 0, (y1 - eye[1]) / directions[:, 1],
                          (y0 - eye[1]) / directions[:, 1])
        tx, ty = np.nan_to_num(tx, nan=np.inf), np.nan_to_num(ty, nan=np.inf)
        t_wall = np.minimum(np.abs(tx), np.abs(ty))
        wall_z = eye[2] + t_wall * dz
        wall = (wall_z >= 0) & (wall_z <= height) & (t_wall < t_floor)
        on_x = tx <= ty
        t[wall], kind[wall] = t_wall[wall], WALL
        wall_normal = np.zeros((count, 3))
        wall_normal[:, 0] = np.where(on_x, -np.sign(directions[:, 0]), 0.0)
        wall_normal[:, 1] = np.where(on_x, 0.0, -np.sign(directions[:, 1]))
        normal[wall] = wall_normal[wall]
        along = eye[:2] + t_wall[:, None] * directions[:, :2]
        coords[wall] = np.stack([np.where(on_x, along[:, 1], along[:, 0]), wall_z], 1)[wall]
    normal[kind == SKY] = 0.0
    return t, kind, normal, coords


def _surface_albedo(surface: Surface, coords: Array) -> Array:
    image = texture(surface.texture)
    value = lookup(image, coords[:, 0] / surface.period + surface.offset[0],
                   -coords[:, 1] / surface.period + surface.offset[1])
    return value * surface.tint if value.ndim == 2 else value[:, None] * surface.tint


def _sky(scene: Scene, directions: Array) -> Array:
    up = np.clip(directions[:, 2] * 2.5, 0.0, 1.0)[:, None]
    return scene.sky[0] * (1 - up) + scene.sky[1] * up


def render_scene(scene: Scene) -> WorldImage:
    """Renders ``scene``: every label is read off the same primary rays as the colours."""
    camera = scene.camera
    size = camera.size
    local_rays = camera_rays(size, camera.focal)
    directions = local_rays @ camera.rotation.T
    count = size * size
    placed = [_Placed.of(obj) for obj in scene.objects]
    t, kind, normal, coords = _background(scene, directions)
    t_object, owner = trace_primary(placed, camera, directions)
    hit_object = owner >= 0
    t = np.where(hit_object, t_object, t)
    points = camera.eye + np.where(np.isfinite(t), t, 0.0)[:, None] * directions

    albedo = np.zeros((count, 3))
    specular = np.zeros(count)
    shininess = np.ones(count)
    for stuff, surface in ((FLOOR, scene.floor), (WALL, scene.wall)):
        mask = (kind == stuff) & ~hit_object
        albedo[mask] = _surface_albedo(surface, coords[mask])
    object_pixels = []
    for k, item in enumerate(placed):
        index = np.flatnonzero(owner == k)
        object_pixels.append(index)
        if index.size == 0:
            continue
        local = item.to_local(points[index])
        local_normal = SHAPES[item.obj.shape_name].normal(local)
        local_normal = local_normal / np.linalg.norm(local_normal, axis=1, keepdims=True)
        normal[index] = local_normal @ item.rotation.T
        look = LOOKS[item.obj.shape_name]
        albedo[index] = look.pattern(local, local_normal, item.obj.colors, item.obj.offset)
        specular[index], shininess[index] = look.specular, look.shininess

    # A normal always faces the viewer (numerical ties at polyhedron edges can pick a back face).
    facing = np.einsum("ij,ij->i", normal, directions)
    normal[facing > 0] *= -1
    rgb = _shade(scene, placed, directions, points, normal, albedo, specular, shininess,
                 valid=np.isfinite(t))
    rgb[~np.isfinite(t)] = _sky(scene, directions[~np.isfinite(t)])
    return _assemble(scene, rgb, t, kind, owner, normal, local_rays, object_pixels)


def _shade(scene: Scene, placed: list[_Placed], directions: Array, points: Array, normal: Array,
           albedo: Array, specular: Array, shininess: Array, valid: Array) -> Array:
    """Lambert + hemisphere ambient + Blinn-Phong, with hard shadows from the sun."""
    facing_sun = normal @ scene.sun
    lit = valid & (facing_sun > 0)
    index = np.flatnonzero(lit)
    # Shadow rays start a little off the surface so they do not hit it again.
    origins = points[index] + normal[index] * 1e-4
    lit[index[shadowed(placed, origins, scene.sun)]] = False
    diffuse = np.where(lit, facing_sun, 0.0)
    # Hemisphere light: sky from above, sunlight bounced off the floor from below, so walls
    # facing away from the sun are not black.
    up = normal[:, 2:3]
    bounce = 0.3 * scene.sun[2] * scene.sun_color
    fill = scene.ambient * (0.6 + 0.4 * up) + bounce * (0.5 - 0.5 * up)
    color = albedo * (fill + diffuse[:, None] * scene.sun_color)
    shiny = np.flatnonzero(lit & (specular > 0))
    halfway = scene.sun - directions[shiny]
    halfway /= np.linalg.norm(halfway, axis=1, keepdims=True)
    highlight = np.maximum(np.einsum("ij,ij->i", normal[shiny], halfway), 0.0)
    color[shiny] += (specular[shiny] * highlight ** shininess[shiny])[:, None] * scene.sun_color
    return color


def _assemble(scene: Scene, rgb: Array, t: Array, kind: Array, owner: Array, normal: Array,
              local_rays: Array, object_pixels: list[Array]) -> WorldImage:
    size = scene.camera.size
    shape2 = (size, size)
    segmentation = kind.astype(np.uint8)
    category = np.array([obj.category for obj in scene.objects], dtype=np.int64)
    hit_object = owner >= 0
    segmentation[hit_object] = len(STUFF) + category[owner[hit_object]]
    depth = np.where(np.isfinite(t), t * local_rays[:, 2], 0.0)
    boxes, labels, instance_ids, areas = [], [], [], []
    for k, index in enumerate(object_pixels):
        if index.size == 0:
            continue
        rows, cols = index // size, index % size
        boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        labels.append(category[k])
        instance_ids.append(k + 1)
        areas.append(index.size)
    return WorldImage(
        rgb=np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8).reshape(*shape2, 3),
        label=int(labels[int(np.argmax(areas))]) if labels else -1,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        box_labels=np.asarray(labels, dtype=np.int64),
        segmentation=segmentation.reshape(shape2),
        depth=depth.astype(np.float32).reshape(shape2),
        normals=(normal @ scene.camera.rotation).astype(np.float32).reshape(*shape2, 3),
        instances=np.where(hit_object, owner + 1, 0).astype(np.uint16).reshape(shape2),
        box_instances=np.asarray(instance_ids, dtype=np.uint16),
        intrinsics=scene.camera.intrinsics,
        distance=t.reshape(shape2),
    )


SEGMENTATION_CLASSES: tuple[str, ...] = STUFF + CATEGORIES


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
