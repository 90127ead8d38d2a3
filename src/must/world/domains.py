"""The domains of the procedural world: one preset per dataset of the paper it stands in for.

MuST (sec. 4.1) trains each teacher on its own labeled dataset (ImageNet for classification,
Objects365 for detection, COCO for segmentation, MiDaS' mix for depth), pseudo-labels a shared
image set, and measures transfer on other datasets. Each preset below is a distribution of
scenes playing one of those roles; ``transfer`` is deliberately shifted (textures, light, camera)
so that downstream fine-tuning measures generality rather than memory of the source domains.

The presets live in one explicit dict, :data:`DOMAINS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from must.errors import ConfigError

Range = tuple[float, float]

SOURCE_FLOORS = ("planks", "tiles", "gravel", "grass", "concrete")
SOURCE_WALLS = ("brick", "plaster", "wallpaper", "camera")
TRANSFER_FLOORS = ("moon", "carpet", "coins", "sand")
TRANSFER_WALLS = ("page", "hubble", "astronaut", "chelsea", "coffee")


@dataclass(frozen=True)
class Mixture:
    """A domain whose images cycle through other domains' presets (image ``i`` is drawn from
    ``parts[i % len(parts)]``, with this domain's own random stream)."""

    name: str
    description: str
    parts: tuple[str, ...]


@dataclass(frozen=True)
class DomainPreset:
    """Ranges every scene of a domain is sampled from (all uniform). Lengths in metres, angles
    in degrees, apparent sizes as a fraction of the image width."""

    name: str
    description: str
    objects: tuple[int, int]
    """Inclusive range of the number of objects (fewer when the floor in view is full)."""
    apparent_size: Range
    """Projected bounding-sphere diameter of an object / image width."""
    focus: bool
    """True: the camera looks at the single first object (object-centric, ImageNet-like).
    False: the camera looks at the floor and objects are spread over what it sees."""
    center_region: tuple[float, float, float, float]
    """(u0, u1, v0, v1): where object centres are placed, in normalized image coordinates."""
    object_size: Range
    """World bounding radius of an object, metres (keeps sizes plausible against the room)."""
    fov_degrees: float
    """Horizontal field of view; fixed per domain so a dataset has one set of intrinsics."""
    camera_height: Range
    """Metres above the floor (unused with ``focus``: there the distance follows from the size)."""
    camera_pitch: Range
    """Degrees below the horizon."""
    indoor_probability: float
    """Chance of a room with walls; otherwise an open floor under the sky."""
    wall_height: Range
    room_margin: Range
    """Distance from the outermost object (or the camera) to the wall."""
    sun_elevation: Range
    sun_intensity: Range
    ambient: Range
    warmth: Range
    """Colour temperature shift of the sun: 0 neutral, > 0 orange, < 0 blue."""
    sky: tuple[tuple[float, float, float], tuple[float, float, float]]
    """(horizon, zenith) colours."""
    floor_textures: tuple[str, ...]
    wall_textures: tuple[str, ...]
    color_jitter: float
    """Scale of the per-instance hue / saturation / value jitter of object colours."""


_DAY_SKY = ((0.78, 0.86, 0.95), (0.32, 0.52, 0.86))
_DUSK_SKY = ((0.98, 0.70, 0.45), (0.35, 0.30, 0.55))

_SOURCE = dict(
    fov_degrees=60.0, indoor_probability=0.8, wall_height=(1.8, 3.5), room_margin=(0.5, 3.0),
    sun_elevation=(35.0, 75.0), sun_intensity=(0.8, 1.1), ambient=(0.25, 0.4), warmth=(-0.1, 0.15),
    sky=_DAY_SKY, floor_textures=SOURCE_FLOORS, wall_textures=SOURCE_WALLS, color_jitter=1.0,
    object_size=(0.12, 0.6),
)

DOMAINS: dict[str, DomainPreset | Mixture] = {
    preset.name: preset
    for preset in (
        DomainPreset(
            name="objects", description="one large object per image, for the classification "
            "teacher (ImageNet-like)", objects=(1, 1), apparent_size=(0.45, 0.7), focus=True,
            center_region=(0.42, 0.58, 0.42, 0.58), camera_height=(0.0, 0.0),
            camera_pitch=(10.0, 45.0), **_SOURCE),
        DomainPreset(
            name="clutter", description="many small objects with boxes, for the detection "
            "teacher (Objects365-like)", objects=(6, 14), apparent_size=(0.12, 0.24), focus=False,
            center_region=(0.06, 0.94, 0.2, 0.94), camera_height=(1.4, 2.4),
            camera_pitch=(35.0, 65.0), **_SOURCE),
        DomainPreset(
            name="scenes", description="rooms with a few objects, for the segmentation teacher "
            "(COCO-like)", objects=(3, 8), apparent_size=(0.15, 0.4), focus=False,
            center_region=(0.1, 0.9, 0.3, 0.9), camera_height=(0.9, 1.8),
            camera_pitch=(12.0, 40.0), **_SOURCE),
        DomainPreset(
            name="depth", description="rooms seen at varied distances, for the depth teacher "
            "(MiDaS-like)", objects=(2, 8), apparent_size=(0.1, 0.35), focus=False,
            center_region=(0.08, 0.92, 0.25, 0.92), camera_height=(0.7, 2.6),
            camera_pitch=(5.0, 45.0), **{**_SOURCE, "room_margin": (0.8, 6.0)}),
        DomainPreset(
            name="transfer", description="a shifted domain (other textures, low warm light, "
            "wide lens, low camera) for the downstream tasks, surface normals included",
            objects=(1, 8), apparent_size=(0.12, 0.4), focus=False,
            center_region=(0.08, 0.92, 0.3, 0.92), object_size=(0.12, 0.6), fov_degrees=75.0,
            camera_height=(0.5, 1.5), camera_pitch=(5.0, 35.0), indoor_probability=0.4,
            wall_height=(1.2, 2.5), room_margin=(0.5, 4.0), sun_elevation=(12.0, 35.0),
            sun_intensity=(0.9, 1.3), ambient=(0.15, 0.3), warmth=(0.2, 0.45), sky=_DUSK_SKY,
            floor_textures=TRANSFER_FLOORS, wall_textures=TRANSFER_WALLS, color_jitter=1.5),
        # The shared unlabeled set every teacher labels. MuST's pool (ImageNet) holds images of
        # the kind the teachers learned on; an equal mixture of the four teacher domains plays that
        # part here, so that every teacher labels images it can read (images, not labels: the
        # pool's own seed draws scenes none of the teachers saw).
        Mixture(name="pool", description="the shared unlabeled image set that every teacher "
                "labels: the four teacher domains in equal parts",
                parts=("objects", "clutter", "scenes", "depth")),
    )
}


def get_domain(name: str, index: int = 0) -> DomainPreset:
    """The preset image ``index`` of domain ``name`` is drawn from (a mixture picks its part);
    fails loudly with the valid names."""
    try:
        domain = DOMAINS[name]
    except KeyError:
        raise ConfigError(f"unknown world domain '{name}'; domains: {', '.join(DOMAINS)}") from None
    if isinstance(domain, Mixture):
        return get_domain(domain.parts[index % len(domain.parts)])
    return domain
