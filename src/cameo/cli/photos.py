"""``cameo photos``: check a folder of photos before training on it: what each file gives
(bucket, crop around the subject's face) and what is wrong with it, and what to add."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..data import DatasetError, check_photos, target_for_base
from ..data.buckets import WAN_480P
from ..training import TrainConfig
from .args import EXIT_USAGE, UserError


def cmd_photos(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder")
    out = Path(args.json) if args.json else None
    if out is not None and out.exists() and not args.overwrite:
        raise FileExistsError(f"{out} exists")
    target = target_for_base(args.base) if args.base else WAN_480P
    given = {k: getattr(args, k) for k in ("height", "width", "frames", "fps")}
    target = dataclasses.replace(target, **{k: v for k, v in given.items() if v is not None})
    if target.height % 16 or target.width % 16 or (target.frames - 1) % 4:
        raise UserError("--height and --width must be multiples of 16, --frames 4k+1")
    try:
        report = check_photos(
            folder, trigger=args.trigger, target=target, min_photos=args.min_photos
        )
    except DatasetError as e:
        raise UserError(str(e)) from e
    print(report.format())
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report.to_json())
        print(f"report written to {out}")
    if not report.enough:
        print(
            f"cameo photos: only {report.usable} usable photos or clips; training needs at "
            f"least {report.min_photos}"
        )
        return EXIT_USAGE
    return 0


def add_parsers(sub) -> None:
    """photos."""
    p = sub.add_parser(
        "photos",
        help="check a photo folder: buckets, face crops and warnings per photo, what to add",
    )
    p.add_argument("folder", help="folder of photos and clips (with .txt captions)")
    p.add_argument(
        "--base",
        default=None,
        help="base model the photos are for: its resolution, clip length and frame rate "
        "(default: a Wan base at 480p, 480x832 with 33-frame clips at 16 fps; cameo-tiny for "
        "the built-in world's photos)",
    )
    p.add_argument("--trigger", default="", help="the person's trigger word, as in cameo train")
    p.add_argument(
        "--min-photos",
        type=int,
        default=TrainConfig.min_photos,
        help=f"usable photos needed to pass (default: {TrainConfig.min_photos}, as training)",
    )
    p.add_argument("--height", type=int, default=None, help="training height (default: the base's)")
    p.add_argument("--width", type=int, default=None, help="training width (default: the base's)")
    p.add_argument("--frames", type=int, default=None, help="clip window length, 4k+1 frames")
    p.add_argument("--fps", type=float, default=None, help="frame rate clips are sampled at")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=cmd_photos)
