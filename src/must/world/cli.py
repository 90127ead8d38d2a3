"""``must world DOMAIN --out DIR``: one domain of the procedural world written to disk."""

from __future__ import annotations

import argparse
from pathlib import Path

from must.config import ConfigError
from must.world.clips import generate_clips
from must.world.domains import DOMAINS
from must.world.video import VIDEO_DOMAINS
from must.world.writer import generate

SUMMARY = "generate a dataset of the procedural world"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Generate one domain of the procedural 3-D world to disk in standard formats: ImageFolder "
        "classes, COCO JSON boxes, PNG masks, 16-bit depth PNG (mm), normals .npy; or, for "
        "`video`, clips of frames with exact motion masks (PNG) and optical flow (.npy). "
        "Resumable: files already written are kept.")
    parser.add_argument("domain", choices=sorted([*DOMAINS, *VIDEO_DOMAINS]), help="which domain preset")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--count", type=int, default=1000,
                        help="number of images, or of clips for video (default 1000)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--frames", type=int, default=None,
                        help="video only: frames per clip (default "
                             f"{VIDEO_DOMAINS['video'].frames})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes to render with")


def run(args: argparse.Namespace) -> int:
    if args.count <= 0 or args.size < 16:
        raise ConfigError("--count must be positive and --size at least 16")
    if args.domain in VIDEO_DOMAINS:
        out = generate_clips(args.domain, args.out, count=args.count, size=args.size, seed=args.seed,
                             frames=args.frames, workers=args.workers)
        print(f"wrote {args.count} '{args.domain}' clips to {out}")
        return 0
    if args.frames is not None:
        raise ConfigError(f"--frames applies to the video domain only, not '{args.domain}'")
    out = generate(args.domain, args.out, count=args.count, size=args.size, seed=args.seed,
                   workers=args.workers)
    print(f"wrote {args.count} '{args.domain}' images to {out}")
    return 0
