"""Aspect-ratio buckets at the base's resolution, and crops that keep the subject's face.

A base trains at ``height x width``. Photos are not all cut to that shape: each goes to the
bucket nearest its own aspect among a few shapes of about the same area (sides multiples of
16, aspect 1:2 to 2:1), as musubi-tuner, ai-toolkit and SimpleTuner do. Unlike them, the crop
keeps the subject's whole face box with a margin and, where the bucket allows, leaves other
people's faces out; no crop is enlarged more than ``max_upscale`` times.

Boxes are ``(left, top, right, bottom)`` floats in the pixels of the image they crop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..models import resolve_base
from ..models.profiles import detect_profile

Box = tuple[float, float, float, float]

SIDE_STEP = 16  # bucket sides are multiples of this (the VAE's 8x and the 2x2 patches)
# Shapes offered besides the base's own (width / height): phone portrait and landscape
# photos (3:4, 4:3), video frames (9:16, 16:9), square, and the 1:2 .. 2:1 limits.
ASPECTS = (1 / 2, 9 / 16, 2 / 3, 3 / 4, 1.0, 4 / 3, 3 / 2, 16 / 9, 2.0)
MAX_UPSCALE = 2.0  # no crop is enlarged more than this; smaller photos are skipped
# Room kept around the face box (dlib's boxes run from the brows to the chin): a share of
# the box's width on each side and of its height below, more above for the forehead and hair.
FACE_MARGIN = (0.3, 0.5, 0.3, 0.3)  # (left, top, right, bottom)
CROP_SIZES = 24  # crop sizes tried, largest first, when other faces must be left out


@dataclass(frozen=True)
class Bucket:
    """One training shape, in pixels."""

    height: int
    width: int

    @property
    def aspect(self) -> float:
        return self.width / self.height

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


@dataclass(frozen=True)
class Target:
    """What a base trains on: its resolution (the buckets keep its area), the length and frame
    rate of its clips, and how far a crop may be enlarged."""

    height: int = 64
    width: int = 64
    frames: int = 17  # 4k+1 frames per clip window
    fps: float = 8.0
    max_upscale: float = MAX_UPSCALE
    # photos of real people: faces are detected, checked and cropped to (None: when the
    # photos are larger than the built-in world's renders, ``WORLD_SIDE``)
    real_faces: bool | None = True

    def buckets(self) -> list[Bucket]:
        return make_buckets(self.height, self.width)


WORLD_TARGET = Target(real_faces=None)  # cameo-tiny's world: 64x64, 17 frames at 8 fps
WORLD_SIDE = 128  # the world renders 64 px photos; a photo this large is a real one
WAN_480P = Target(480, 832, 33, 16.0)  # real photos for Wan 2.1/2.2 at 480p (models.profiles)


@dataclass(frozen=True)
class Framing:
    """Where one photo goes: its bucket and crop (in the pixels of the image framed)."""

    bucket: Bucket
    crop: Box
    others_in_crop: bool = False  # other faces could not be left out

    @property
    def upscale(self) -> float:
        """How many times the crop is enlarged to fill the bucket (< 1: reduced)."""
        return self.bucket.width / (self.crop[2] - self.crop[0])


def make_buckets(height: int, width: int) -> list[Bucket]:
    """Buckets of about ``height * width`` pixels (never more), sides multiples of 16, aspect
    within 1:2 .. 2:1: the base's own shape, its transpose, and the nearest shape to each of
    ``ASPECTS``; sorted by aspect. A square base of 64x64 gives 48x80, 64x64 and 80x48."""
    area = height * width
    frontier = []  # for each height, the widest shape within the area
    for h in range(SIDE_STEP, area // SIDE_STEP + 1, SIDE_STEP):
        w = area // h // SIDE_STEP * SIDE_STEP
        if w >= SIDE_STEP and 0.5 - 1e-9 <= w / h <= 2.0 + 1e-9:
            frontier.append(Bucket(h, w))
    chosen = [Bucket(height, width), Bucket(width, height)]
    for a in ASPECTS:
        if not frontier:
            break
        best = min(frontier, key=lambda b: (abs(math.log(b.aspect / a)), -b.height * b.width))
        # shapes within 4% of the aspect of one already chosen add nothing
        if all(abs(math.log(best.aspect / c.aspect)) > 0.04 for c in chosen):
            chosen.append(best)
    return sorted(set(chosen), key=lambda b: (b.aspect, b.height))


def target_for_base(base: str | Path | None) -> Target:
    """The target of a base from its profile (``cameo.models.profiles``), read from its
    config files without loading it: cameo-tiny 64x64, 17 frames at 8 fps; Wan 480x832
    (TI2V-5B 704x1280), 33-frame clips at 16 fps (24)."""
    p = detect_profile(resolve_base(base))
    # the built-in world's cartoon faces are not what a real face detector finds
    real = None if p.builtin else True  # cameo-tiny: the world's or real photos
    return Target(p.height, p.width, p.frames, float(p.fps), real_faces=real)


def training_target(base: str | Path | None, height: int, width: int) -> Target:
    """The target of a run training ``base`` at ``height`` x ``width``: the base's clip length
    and frame rate (``target_for_base``) at the run's resolution."""
    return replace(target_for_base(base), height=height, width=width)


def by_aspect(buckets: Sequence[Bucket], width: float, height: float) -> list[Bucket]:
    """``buckets`` nearest the aspect ``width / height`` first (in log ratio)."""
    a = width / height
    return sorted(buckets, key=lambda b: (abs(math.log(b.aspect / a)), b.aspect))


def with_margin(box: Box, size: tuple[int, int]) -> Box:
    """``box`` grown by ``FACE_MARGIN`` and clipped to an image of ``size`` (width, height)."""
    w, h = box[2] - box[0], box[3] - box[1]
    ml, mt, mr, mb = FACE_MARGIN
    return (
        max(0.0, box[0] - ml * w),
        max(0.0, box[1] - mt * h),
        min(float(size[0]), box[2] + mr * w),
        min(float(size[1]), box[3] + mb * h),
    )


def overlaps(a: Box, b: Box) -> bool:
    """Whether two boxes share pixels (touching edges do not)."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def contains(outer: Box, inner: Box, tol: float = 1e-6) -> bool:
    return (
        outer[0] <= inner[0] + tol
        and outer[1] <= inner[1] + tol
        and outer[2] >= inner[2] - tol
        and outer[3] >= inner[3] - tol
    )


def _axis_positions(length: float, extent: float, lo: float, hi: float, avoid_edges) -> list:
    """Candidate starts on one axis: centred (clamped to [lo, hi]), both ends, and just past
    each box to avoid; the best placements touch one of these."""
    centre = min(max((length - extent) / 2, lo), hi)
    cands = [centre, lo, hi]
    for start, end in avoid_edges:
        cands += [end, start - extent]
    return sorted({c for c in cands if lo - 1e-6 <= c <= hi + 1e-6}, key=lambda c: abs(c - centre))


def _place(size, cw: float, ch: float, must: Box, avoid: Sequence[Box]) -> Box | None:
    """A ``cw x ch`` crop inside the image holding ``must`` and overlapping no box of
    ``avoid``, as near the centred position as possible; None if there is none."""
    w, h = size
    x_lo, x_hi = max(0.0, must[2] - cw), min(w - cw, must[0])
    y_lo, y_hi = max(0.0, must[3] - ch), min(h - ch, must[1])
    if x_lo > x_hi + 1e-6 or y_lo > y_hi + 1e-6:
        return None
    xs = _axis_positions(w, cw, x_lo, x_hi, [(o[0], o[2]) for o in avoid])
    ys = _axis_positions(h, ch, y_lo, y_hi, [(o[1], o[3]) for o in avoid])
    cx, cy = xs[0], ys[0]
    best = None
    for x in xs:
        for y in ys:
            box = (x, y, x + cw, y + ch)
            if any(overlaps(box, o) for o in avoid):
                continue
            d = abs(x - cx) + abs(y - cy)
            if best is None or d < best[0]:
                best = (d, box)
    return None if best is None else best[1]


def crop_for(
    size: tuple[int, int],
    bucket: Bucket,
    keep: Box | None = None,
    avoid: Sequence[Box] = (),
    max_upscale: float = MAX_UPSCALE,
) -> Box | None:
    """The largest crop of ``bucket``'s aspect in an image of ``size`` (width, height) that
    holds ``keep`` (with ``FACE_MARGIN`` where it fits, else the bare box) and overlaps no box
    in ``avoid``, centred where the constraints allow. None when there is none, or when the
    crop would be enlarged more than ``max_upscale`` times to fill the bucket."""
    w, h = size
    a = bucket.aspect
    cw_max = min(float(w), h * a)
    cw_min = bucket.width / max_upscale
    if cw_max < cw_min - 1e-6:
        return None
    if keep is None:
        x, y = (w - cw_max) / 2, (h - cw_max / a) / 2
        return (x, y, x + cw_max, y + cw_max / a)
    for must in (with_margin(keep, size), tuple(map(float, keep))):
        need = max(must[2] - must[0], (must[3] - must[1]) * a)
        if need > cw_max + 1e-6:
            continue
        lo = max(cw_min, need)
        n = CROP_SIZES if avoid else 1
        for k in range(n):  # geometric steps from the largest crop down to the smallest
            cw = cw_max * (lo / cw_max) ** (k / max(n - 1, 1))
            box = _place(size, cw, cw / a, must, avoid)
            if box is not None:
                return box
    return None


def frame_photo(
    size: tuple[int, int],
    buckets: Sequence[Bucket],
    keep: Box | None = None,
    avoid: Sequence[Box] = (),
    max_upscale: float = MAX_UPSCALE,
) -> Framing | None:
    """The bucket and crop for one image: among the buckets whose crop holds ``keep`` and
    leaves out ``avoid``, the one that keeps the most of the image (the nearest aspect, for a
    photo of one person); if none leaves the others out, the largest crop holding ``keep``,
    flagged. None when the image is too small for every bucket or the face fits none."""
    order = by_aspect(buckets, *size)
    passes = [tuple(avoid), ()] if avoid else [()]
    for avoiding in passes:
        found = []
        for b in order:
            crop = crop_for(size, b, keep, avoiding, max_upscale)
            if crop is not None:
                found.append((-(crop[2] - crop[0]) * (crop[3] - crop[1]), len(found), b, crop))
        if found:
            _, _, b, crop = min(found)
            flagged = bool(avoid) and any(overlaps(crop, o) for o in avoid)
            return Framing(b, crop, flagged)
    return None


def render(img: Image.Image, framing: Framing) -> np.ndarray:
    """The crop resampled to its bucket (Lanczos): (H, W, 3) uint8. A crop that is the whole
    image at the bucket's size is returned pixel for pixel."""
    b = framing.bucket
    return np.asarray(img.resize((b.width, b.height), Image.LANCZOS, box=framing.crop))
