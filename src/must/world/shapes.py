"""Analytic ray intersection of the world's object shapes, vectorized over rays (NumPy).

Every shape lives in its own local frame, resting on the floor ``z = 0``, about one unit in size.
A shape answers two questions: ``hit(origins, directions) -> t`` (distance along each ray to the
first surface, ``inf`` where the ray misses; directions need not be unit: the renderer passes
scaled ones so that ``t`` is the world distance) and ``normal(points) -> n`` (outward normal,
not normalized, at points on the surface). Convex solids are intersections of half-spaces and
quadrics, computed exactly as ray intervals; the capsule is a union, the holed box a difference
(CSG on intervals); the torus is found by sphere tracing its exact distance function and polished
by Newton steps on its quartic, so every hit is exact to float precision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Array = np.ndarray
EPSILON = 1e-6
"""Hits closer than this (in world metres) are ignored: shadow rays start on a surface."""


@dataclass(frozen=True)
class Shape:
    name: str
    hit: Callable[[Array, Array], Array]
    normal: Callable[[Array], Array]
    bound_center: tuple[float, float, float]
    bound_radius: float
    """A sphere around the shape: cheap culling and the object's apparent size."""
    footprint: float
    """Radius of the shape's footprint on the floor: objects must not overlap."""


def _dot(a: Array, b: Array) -> Array:
    return np.einsum("...i,...i->...", a, b)


def _entry(near: Array, far: Array) -> Array:
    """The first hit of a ray with a solid occupying ``[near, far]`` along it."""
    return np.where((near <= far) & (near > EPSILON), near, np.inf)


def _quadratic(a: Array, b: Array, c: Array) -> tuple[Array, Array, Array]:
    """Sorted real roots of ``a t^2 + b t + c`` and whether they exist."""
    disc = b * b - 4 * a * c
    root = np.sqrt(np.maximum(disc, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (-b - root) / (2 * a), (-b + root) / (2 * a)
    return np.minimum(t0, t1), np.maximum(t0, t1), (disc >= 0) & (a != 0)


def _sphere_interval(o: Array, d: Array, center: Array, radius: float) -> tuple[Array, Array]:
    oc = o - center
    near, far, real = _quadratic(_dot(d, d), 2 * _dot(oc, d), _dot(oc, oc) - radius**2)
    return np.where(real, near, np.inf), np.where(real, far, -np.inf)


def _disc_interval(ox: Array, oy: Array, dx: Array, dy: Array, radius: float
                   ) -> tuple[Array, Array]:
    """Interval inside an infinite cylinder ``x^2 + y^2 <= r^2`` (in the given 2 coordinates)."""
    a, c = dx * dx + dy * dy, ox * ox + oy * oy - radius**2
    near, far, real = _quadratic(a, 2 * (ox * dx + oy * dy), c)
    parallel = a == 0  # ray along the axis: inside everywhere or nowhere
    near = np.where(real, near, np.where(parallel & (c <= 0), -np.inf, np.inf))
    far = np.where(real, far, np.where(parallel & (c <= 0), np.inf, -np.inf))
    return near, far


def _planes_interval(o: Array, d: Array, normals: Array, offsets: Array) -> tuple[Array, Array]:
    """Interval inside the convex polyhedron ``normals @ x <= offsets``."""
    denom = d @ normals.T
    dist = offsets - o @ normals.T
    with np.errstate(divide="ignore", invalid="ignore"):
        t = dist / denom
    near = np.where(denom < 0, t, -np.inf).max(axis=-1)
    far = np.where(denom > 0, t, np.inf).min(axis=-1)
    outside = ((denom == 0) & (dist < 0)).any(axis=-1)
    return near, np.where(outside, -np.inf, far)


def _slab_interval(o: Array, d: Array, low: float, high: float) -> tuple[Array, Array]:
    """Interval with ``low <= z <= high``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (low - o[..., 2]) / d[..., 2], (high - o[..., 2]) / d[..., 2]
    inside = (o[..., 2] >= low) & (o[..., 2] <= high)
    flat = d[..., 2] == 0
    near = np.where(flat, np.where(inside, -np.inf, np.inf), np.minimum(t0, t1))
    far = np.where(flat, np.where(inside, np.inf, -np.inf), np.maximum(t0, t1))
    return near, far


def _planes_normal(normals: Array, offsets: Array) -> Callable[[Array], Array]:
    return lambda p: normals[np.argmax(p @ normals.T - offsets, axis=-1)]


def _polyhedron(name: str, normals: list[list[float]], offsets: list[float], center: tuple,
                footprint: float) -> Shape:
    unit = np.asarray(normals, float)
    scale = np.linalg.norm(unit, axis=1)
    unit, offs = unit / scale[:, None], np.asarray(offsets, float) / scale
    corners = _polyhedron_corners(unit, offs)
    radius = float(np.linalg.norm(corners - np.asarray(center), axis=1).max())
    return Shape(name, lambda o, d: _entry(*_planes_interval(o, d, unit, offs)),
                 _planes_normal(unit, offs), center, radius, footprint)


def _polyhedron_corners(normals: Array, offsets: Array) -> Array:
    """Vertices of a bounded polyhedron (all feasible triple-plane intersections)."""
    corners = []
    count = len(normals)
    for i in range(count):
        for j in range(i + 1, count):
            for k in range(j + 1, count):
                matrix = normals[[i, j, k]]
                if abs(np.linalg.det(matrix)) < 1e-9:
                    continue
                point = np.linalg.solve(matrix, offsets[[i, j, k]])
                if (normals @ point <= offsets + 1e-9).all():
                    corners.append(point)
    return np.asarray(corners)


# -- quadric shapes ------------------------------------------------------------------------------

SPHERE_CENTER = np.array([0.0, 0.0, 1.0])
EGG_RADII = np.array([0.72, 0.72, 1.0])
CYLINDER = (0.75, 1.7)  # radius, height
CONE = (0.9, 2.0)  # base radius, height
CAPSULE = (0.65, 0.5)  # half length along x, radius
TORUS = (0.7, 0.33)  # major, minor radius
HOLED_BOX = (1.0, 0.55, 1.3, 0.45, 0.6)  # half x, half y, height, hole radius, hole centre z


def _sphere_hit(o: Array, d: Array) -> Array:
    return _entry(*_sphere_interval(o, d, SPHERE_CENTER, 1.0))


def _egg_hit(o: Array, d: Array) -> Array:
    center = np.array([0.0, 0.0, EGG_RADII[2]])
    return _entry(*_sphere_interval((o - center) / EGG_RADII, d / EGG_RADII, np.zeros(3), 1.0))


def _egg_normal(p: Array) -> Array:
    return (p - np.array([0.0, 0.0, EGG_RADII[2]])) / EGG_RADII**2


def _cylinder_hit(o: Array, d: Array) -> Array:
    radius, height = CYLINDER
    near, far = _disc_interval(o[..., 0], o[..., 1], d[..., 0], d[..., 1], radius)
    slab_near, slab_far = _slab_interval(o, d, 0.0, height)
    return _entry(np.maximum(near, slab_near), np.minimum(far, slab_far))


def _cylinder_normal(p: Array) -> Array:
    radius, height = CYLINDER
    side = np.abs(np.hypot(p[..., 0], p[..., 1]) - radius)
    cap = np.minimum(np.abs(p[..., 2]), np.abs(p[..., 2] - height))
    zero = np.zeros_like(side)
    axial = np.stack([zero, zero, np.sign(p[..., 2] - height / 2)], -1)
    radial = p * np.array([1.0, 1.0, 0.0])
    return np.where((side < cap)[..., None], radial, axial)


def _cone_hit(o: Array, d: Array) -> Array:
    radius, height = CONE
    k2 = (radius / height) ** 2
    w = height - o[..., 2]
    a = d[..., 0] ** 2 + d[..., 1] ** 2 - k2 * d[..., 2] ** 2
    b = 2 * (o[..., 0] * d[..., 0] + o[..., 1] * d[..., 1] + k2 * w * d[..., 2])
    c = o[..., 0] ** 2 + o[..., 1] ** 2 - k2 * w * w
    t0, t1, real = _quadratic(a, b, c)
    s0, s1 = _slab_interval(o, d, 0.0, height)
    # Inside the double cone where a t^2 + b t + c <= 0: [t0, t1] if a > 0, else the two outer
    # rays. Within the slab only the lower nappe remains, so at most one piece is non-empty.
    opening = a > 0
    near_a, far_a = np.maximum(t0, s0), np.minimum(t1, s1)
    near_b, far_b = s0, np.minimum(t0, s1)
    near_c, far_c = np.maximum(t1, s0), s1
    use_b = near_b <= far_b
    near = np.where(opening, near_a, np.where(use_b, near_b, near_c))
    far = np.where(opening, far_a, np.where(use_b, far_b, far_c))
    near = np.where(real, near, np.where(opening, np.inf, s0))
    far = np.where(real, far, np.where(opening, -np.inf, s1))
    return _entry(near, far)


def _cone_normal(p: Array) -> Array:
    radius, height = CONE
    k = radius / height
    side = np.abs(np.hypot(p[..., 0], p[..., 1]) - k * (height - p[..., 2])) / np.sqrt(1 + k * k)
    slanted = np.stack([p[..., 0], p[..., 1], k * k * (height - p[..., 2])], -1)
    down = np.broadcast_to(np.array([0.0, 0.0, -1.0]), p.shape)
    return np.where((side < np.abs(p[..., 2]))[..., None], slanted, down)


def _capsule_ends() -> tuple[Array, Array]:
    half, radius = CAPSULE
    return np.array([-half, 0.0, radius]), np.array([half, 0.0, radius])


def _capsule_hit(o: Array, d: Array) -> Array:
    half, radius = CAPSULE
    start, end = _capsule_ends()
    # Union of a cylinder along x and two end spheres: the first entry of any part.
    near, far = _disc_interval(o[..., 1], o[..., 2] - radius, d[..., 1], d[..., 2], radius)
    with np.errstate(divide="ignore", invalid="ignore"):
        x0, x1 = (-half - o[..., 0]) / d[..., 0], (half - o[..., 0]) / d[..., 0]
    body = _entry(np.maximum(near, np.minimum(x0, x1)), np.minimum(far, np.maximum(x0, x1)))
    caps = np.minimum(_entry(*_sphere_interval(o, d, start, radius)),
                      _entry(*_sphere_interval(o, d, end, radius)))
    return np.minimum(body, caps)


def _capsule_normal(p: Array) -> Array:
    half, radius = CAPSULE
    nearest = np.stack([np.clip(p[..., 0], -half, half), np.zeros(p.shape[:-1]),
                        np.full(p.shape[:-1], radius)], -1)
    return p - nearest


def _cubic_roots(a: Array, b: Array, c: Array, d: Array) -> Array:
    """Real roots of ``a x^3 + b x^2 + c x + d`` (a != 0), [M, 3], NaN where fewer than three
    (Cardano / trigonometric form)."""
    b, c, d = b / a, c / a, d / a
    p = c - b * b / 3
    q = 2 * b**3 / 27 - b * c / 3 + d
    disc = (q / 2) ** 2 + (p / 3) ** 3
    root = np.sqrt(np.maximum(disc, 0.0))
    single = np.cbrt(-q / 2 + root) + np.cbrt(-q / 2 - root)
    scale = 2 * np.sqrt(np.maximum(-p / 3, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        angle = np.arccos(np.clip(3 * q / (p * scale), -1.0, 1.0)) / 3
    three = scale[:, None] * np.cos(angle[:, None] - 2 * np.pi / 3 * np.arange(3))
    nan = np.full_like(single, np.nan)
    roots = np.where((disc > 0)[:, None], np.stack([single, nan, nan], 1), three)
    return roots - b[:, None] / 3


def _horner(coefficients: Array, t: Array) -> Array:
    """Polynomial with per-ray ``coefficients`` [M, n] (highest first) at ``t`` [M] or [M, k]."""
    t2 = t if t.ndim == 2 else t[:, None]
    value = np.broadcast_to(coefficients[:, :1], t2.shape).copy()
    for column in range(1, coefficients.shape[1]):
        value = value * t2 + coefficients[:, column:column + 1]
    return value if t.ndim == 2 else value[:, 0]


def _torus_hit(o: Array, d: Array) -> Array:
    """Exact first root of the torus quartic f(t) = (|p|^2 + R^2 - r^2)^2 - 4 R^2 (x^2 + y^2)
    (f > 0 outside): the roots of f' split the bounded ray into monotone pieces; the first piece
    going from outside to inside holds the hit, found by Newton safeguarded with bisection."""
    major, minor = TORUS
    q = o - np.array([0.0, 0.0, minor])
    result = np.full(q.shape[:-1], np.inf)
    near, far = _sphere_interval(q, d, np.zeros(3), major + minor)
    rays = np.flatnonzero((near <= far) & (far > EPSILON))
    start = np.maximum(near[rays], EPSILON)
    d = d[rays]
    q = q[rays] + start[:, None] * d  # measure from the bound: well-conditioned coefficients
    span = far[rays] - start
    a, b, c = _dot(d, d), 2 * _dot(q, d), _dot(q, q) + major**2 - minor**2
    ring_a = d[:, 0] ** 2 + d[:, 1] ** 2
    ring_b = 2 * (q[:, 0] * d[:, 0] + q[:, 1] * d[:, 1])
    ring_c = q[:, 0] ** 2 + q[:, 1] ** 2
    k = 4 * major**2
    quartic = np.stack([a * a, 2 * a * b, b * b + 2 * a * c - k * ring_a,
                        2 * b * c - k * ring_b, c * c - k * ring_c], axis=1)
    critical = _cubic_roots(*(quartic[:, :4] * np.array([4.0, 3.0, 2.0, 1.0])).T)
    critical = np.where(np.isfinite(critical), np.clip(critical, 0, span[:, None]), span[:, None])
    knots = np.sort(np.concatenate([np.zeros((rays.size, 1)), critical, span[:, None]], 1), 1)
    values = _horner(quartic, knots)
    entering = (values[:, :-1] > 0) & (values[:, 1:] <= 0)
    rows = np.flatnonzero(entering.any(axis=1))
    piece = np.argmax(entering[rows], axis=1)
    low, high = knots[rows, piece], knots[rows, piece + 1]
    c4, c3, c2, c1, c0 = quartic[rows].T
    # Start at the end where f f'' > 0 (Fourier): Newton then approaches the root from one side.
    curvature_low = (12 * c4 * low + 6 * c3) * low + 2 * c2
    t = np.where(values[rows, piece] * curvature_low > 0, low, high)
    for _ in range(60):
        f = (((c4 * t + c3) * t + c2) * t + c1) * t + c0
        outside = f > 0
        low, high = np.where(outside, t, low), np.where(outside, high, t)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = t - f / (((4 * c4 * t + 3 * c3) * t + 2 * c2) * t + c1)
        previous, t = t, np.where((newton >= low) & (newton <= high), newton, (low + high) / 2)
        if rows.size == 0 or np.abs(t - previous).max() < 1e-10:
            break
    hit = start[rows] + t
    keep = hit > EPSILON
    result[rays[rows[keep]]] = hit[keep]
    return result


def _torus_normal(p: Array) -> Array:
    major, minor = TORUS
    q = p - np.array([0.0, 0.0, minor])
    ring = np.hypot(q[..., 0], q[..., 1])
    scale = major / np.maximum(ring, 1e-9)
    return q - np.stack([q[..., 0] * scale, q[..., 1] * scale, np.zeros_like(ring)], -1)


def _box_planes(hx: float, hy: float, height: float) -> tuple[Array, Array]:
    normals = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1.0]])
    return normals, np.array([hx, hx, hy, hy, height, 0.0])


def _holed_box_hit(o: Array, d: Array) -> Array:
    hx, hy, height, hole, hole_z = HOLED_BOX
    box_near, box_far = _planes_interval(o, d, *_box_planes(hx, hy, height))
    hole_near, hole_far = _disc_interval(o[..., 0], o[..., 2] - hole_z, d[..., 0], d[..., 2], hole)
    # Box minus cylinder along y: the box entry unless it lies in the hole, then the hole's exit.
    in_hole = (box_near >= hole_near) & (box_near <= hole_far)
    solid = box_near <= box_far
    t = np.where(in_hole, np.where(hole_far < box_far, hole_far, np.inf), box_near)
    return np.where(solid & (t > EPSILON), t, np.inf)


def _holed_box_normal(p: Array) -> Array:
    hx, hy, height, hole, hole_z = HOLED_BOX
    normals, offsets = _box_planes(hx, hy, height)
    residual = p @ normals.T - offsets
    box_normal = normals[np.argmax(residual, axis=-1)]
    radial = np.stack([p[..., 0], np.zeros(p.shape[:-1]), p[..., 2] - hole_z], -1)
    hole_residual = np.abs(np.sqrt(_dot(radial, radial)) - hole)
    inward = hole_residual < np.abs(residual.max(axis=-1))
    return np.where(inward[..., None], -radial, box_normal)


def _hexagon_planes() -> tuple[list[list[float]], list[float]]:
    apothem, height = 0.9 * np.cos(np.pi / 6), 1.3
    angles = np.arange(6) * np.pi / 3
    normals = [[float(np.cos(a)), float(np.sin(a)), 0.0] for a in angles] + [[0, 0, 1], [0, 0, -1]]
    return normals, [float(apothem)] * 6 + [height, 0.0]


def _octahedron_planes() -> tuple[list[list[float]], list[float]]:
    half, tall = 0.85, 1.1
    normals, offsets = [], []
    for sx in (-1, 1):
        for sy in (-1, 1):
            for sz in (-1, 1):
                normals.append([sx / half, sy / half, sz / tall])
                offsets.append(1.0 + sz)
    return normals, offsets


def _shapes() -> dict[str, Shape]:
    hex_normals, hex_offsets = _hexagon_planes()
    octa_normals, octa_offsets = _octahedron_planes()
    box_normals, box_offsets = _box_planes(0.8, 0.8, 1.6)
    h_radius, h_height = CONE
    cone_center = (h_radius**2 + h_height**2) / (2 * h_height)
    hx, hy, hh, _, _ = HOLED_BOX
    shapes = [
        Shape("sphere", _sphere_hit, lambda p: p - SPHERE_CENTER, (0, 0, 1.0), 1.0, 1.0),
        _polyhedron("cube", box_normals.tolist(), box_offsets.tolist(), (0, 0, 0.8), 1.14),
        Shape("cylinder", _cylinder_hit, _cylinder_normal, (0, 0, CYLINDER[1] / 2),
              float(np.hypot(CYLINDER[0], CYLINDER[1] / 2)),
              CYLINDER[0]),
        Shape("cone", _cone_hit, _cone_normal, (0, 0, h_height - cone_center), cone_center,
              h_radius),
        Shape("torus", _torus_hit, _torus_normal, (0, 0, TORUS[1]), sum(TORUS), sum(TORUS)),
        Shape("capsule", _capsule_hit, _capsule_normal, (0, 0, CAPSULE[1]), sum(CAPSULE),
              sum(CAPSULE)),
        _polyhedron("pyramid", [[1.6, 0, 0.95], [-1.6, 0, 0.95], [0, 1.6, 0.95], [0, -1.6, 0.95],
                                [0, 0, -1]], [1.52, 1.52, 1.52, 1.52, 0.0], (0, 0, 0.24), 1.34),
        Shape("holed_box", _holed_box_hit, _holed_box_normal, (0, 0, hh / 2),
              float(np.sqrt(hx**2 + hy**2 + (hh / 2) ** 2)), float(np.hypot(hx, hy))),
        _polyhedron("hex_prism", hex_normals, hex_offsets, (0, 0, 0.65), 0.9),
        _polyhedron("octahedron", octa_normals, octa_offsets, (0, 0, 1.1), 0.85),
        Shape("egg", _egg_hit, _egg_normal, (0, 0, 1.0), 1.0, float(EGG_RADII[0])),
        _polyhedron("wedge", [[0, 0, -1], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [1.2, 0, 2.0]],
                    [0.0, 1.0, 0.7, 0.7, 1.2], (0, 0, 0.5), 1.22),
    ]
    return {shape.name: shape for shape in shapes}


SHAPES: dict[str, Shape] = _shapes()
"""Shape name -> shape; the world's object categories, in class-id order."""
