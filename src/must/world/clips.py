"""Writing a video domain of the world to disk, in the plain clip layout ``video:DIR`` reads.

Layout of ``out/`` (``<clip>`` = ``clip-<index:06d>``, ``<frame>`` = ``frame-<t:02d>``)::

    world.json                  what was generated (written last: its presence = complete)
    <clip>/<frame>.png          RGB frames
    <clip>/motion/<frame>.png   8-bit motion mask: 255 = the pixel shows a moving object, 0 = not
    <clip>/flow/<frame>.npy     float32 [H, W, 2] optical flow (dx, dy) in pixels to frame t + 1
    <clip>/clip.json            the clip's motion (velocities, moving instance ids); written after
                                its frames, so it marks the clip done (resume)

Files are written atomically, and a clip depends only on ``(seed, index, size, frames)``, so a
resumed run is byte-identical to an uninterrupted one (as :mod:`must.world.writer`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from must.config import ConfigError
from must.files import write_atomic
from must.world.domains import get_domain
from must.world.scene import focal_length
from must.world.video import VIDEO_DOMAINS, make_clip, render_frame
from must.world.writer import npy_bytes, png_bytes, read_record, refuse_other_dataset, render_missing

FORMAT_VERSION = 1
MAX_FRAMES = 100
"""Frame numbers have two digits."""


def clip_name(index: int) -> str:
    return f"clip-{index:06d}"


def frame_name(frame: int) -> str:
    return f"frame-{frame:02d}"


def _files(clip: str, frames: int) -> list[str]:
    names = [frame_name(t) for t in range(frames)]
    return ([f"{clip}/{name}.png" for name in names] + [f"{clip}/motion/{name}.png" for name in names]
            + [f"{clip}/flow/{name}.npy" for name in names])


def write_clip(out: Path, domain: str, seed: int, index: int, size: int, frames: int) -> dict[str, Any]:
    """Renders clip ``index`` and writes its frames, masks and flow, then its record."""
    clip = make_clip(seed, index, size, domain)
    name = clip_name(index)
    for t in range(frames):
        frame = render_frame(clip, t)
        write_atomic(out / name / f"{frame_name(t)}.png", png_bytes(frame.image.rgb))
        mask = np.where(frame.motion, 255, 0).astype(np.uint8)
        write_atomic(out / name / "motion" / f"{frame_name(t)}.png", png_bytes(mask))
        write_atomic(out / name / "flow" / f"{frame_name(t)}.npy", npy_bytes(frame.flow))
    record = {"clip": name, "index": index, "frames": frames,
              "moving_instances": clip.moving_instances.tolist(),
              "velocities": clip.velocities.tolist(), "camera_velocity": clip.camera_velocity.tolist(),
              "categories": [obj.category for obj in clip.scene.objects],
              "files": _files(name, frames)}
    write_atomic(out / name / "clip.json", json.dumps(record).encode())
    return record


def _done(out: Path, index: int, frames: int) -> bool:
    record = read_record(out / clip_name(index) / "clip.json")
    return (record is not None and record.get("frames") == frames
            and all((out / name).exists() for name in record["files"]))


def _work(job: tuple[str, str, int, int, int, int]) -> int:
    out, domain, seed, index, size, frames = job
    write_clip(Path(out), domain, seed, index, size, frames)
    return index


def _manifest(domain: str, seed: int, count: int, size: int, frames: int) -> dict[str, Any]:
    focal = focal_length(get_domain(VIDEO_DOMAINS[domain].scene_domain).fov_degrees, size)
    return {"format_version": FORMAT_VERSION, "domain": domain, "seed": seed, "count": count,
            "size": size, "frames": frames,
            "camera_intrinsics": {"fx": focal, "fy": focal, "cx": size / 2, "cy": size / 2},
            "motion": "255 = the pixel shows a moving object (camera motion excluded)",
            "flow": "float32 [H, W, 2]: (dx, dy) pixels from frame t to t + 1; NaN = behind the camera"}


_IDENTITY = ("format_version", "domain", "seed", "count", "size", "frames")


def generate_clips(domain: str, out: Path, count: int, size: int = 64, seed: int = 0,
                   frames: int | None = None, progress: bool = True, workers: int = 1) -> Path:
    """Writes ``count`` clips of ``frames`` frames (default: the preset's) to ``out`` (layout: module
    docstring). Resumable; a directory holding another dataset is refused."""
    frames = VIDEO_DOMAINS[domain].frames if frames is None else frames
    if not 2 <= frames <= MAX_FRAMES:
        raise ConfigError(f"--frames must be in [2, {MAX_FRAMES}], got {frames}")
    out = Path(out)
    manifest = _manifest(domain, seed, count, size, frames)
    identity = {name: manifest[name] for name in _IDENTITY}
    marker = out / ".identity.json"
    refuse_other_dataset(out, identity, marker)
    missing = [index for index in range(count) if not _done(out, index, frames)]
    if not missing and (out / "world.json").exists():
        return out
    jobs = [(str(out), domain, seed, index, size, frames) for index in missing]
    for _ in render_missing(out, identity, marker, _work, jobs, workers, 2, f"world {domain}", "clip",
                            progress):
        pass
    write_atomic(out / "world.json", json.dumps(manifest, indent=1).encode())
    return out
