"""Finding faces in a photo or frame with dlib's HOG (default) or MMOD CNN detector.

Coordinates are the pixels of the image as passed in, which must already be upright (EXIF
rotation applied by the loader): x to the right, y down, ``(0, 0)`` the top-left pixel's
top-left corner. A box ``(left, top, right, bottom)`` holds the pixels ``left <= x < right``
and ``top <= y < bottom`` (right and bottom exclusive, unlike dlib's inclusive rectangles) and
is clipped to the image. Landmarks are pixel centres: pixel ``(x, y)`` is at ``(x, y)``.

The detector works on a resized copy: photos whose longest side is over ``max_side`` are
shrunk (a 48 MP photo in about a second), tiny ones (a 64x64 render, a 25x25 LFW face) are
enlarged to ``SMALL_SIDE`` so that their faces reach the HOG window; boxes and landmarks are
mapped back to the original's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from . import models

Box = tuple[int, int, int, int]  # (left, top, right, bottom), right and bottom exclusive

HOG_MAX_SIDE = 1600  # longest side HOG looks at; faces down to ~2.5% of it are found (upsample 1)
CNN_MAX_SIDE = 800  # the CNN costs ~10 s per 512x512 at upsample 1 on two CPU cores
# dlib's HOG window is 80x80 px (40 px faces at upsample 1): enlarge small images to this side
SMALL_SIDE = 400


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class Face:
    """One detected face, in the original image's pixels."""

    box: Box  # (left, top, right, bottom), right/bottom exclusive, clipped to the image
    score: float  # HOG: SVM margin (> 0 detected, ~1 a clear frontal face); CNN: confidence
    landmarks: np.ndarray  # (5, 2) float (x, y): eye corners and nose base, dlib's order

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> int:
        return self.width * self.height


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` as a contiguous uint8 (H, W, 3) RGB array; grey (H, W) is repeated to RGB."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise ValueError(f"faces need uint8 images (0-255), got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"faces need (H, W, 3) RGB or (H, W) grey images, got {arr.shape}")
    return np.ascontiguousarray(arr)


def work_scale(height: int, width: int, max_side: int) -> float:
    """Factor from the original to the copy the detector sees (< 1 shrinks, > 1 enlarges)."""
    side = max(height, width)
    if side > max_side:
        return max_side / side
    if side < SMALL_SIDE:
        return SMALL_SIDE / side
    return 1.0


def resize(image: np.ndarray, scale: float) -> np.ndarray:
    """(H, W, 3) uint8 -> (round(H*scale), round(W*scale), 3), antialiased when shrinking."""
    if scale == 1.0:
        return image
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    # reducing_gap: Pillow first box-reduces by an integer factor, fast on 48 MP photos
    out = Image.fromarray(image).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(out)


def _map_box(rect: Any, sx: float, sy: float, height: int, width: int) -> Box:
    """dlib rectangle (inclusive, work pixels) -> exclusive box in original pixels."""
    edges = (rect.left() / sx, rect.top() / sy, (rect.right() + 1) / sx, (rect.bottom() + 1) / sy)
    left, top, right, bottom = (round(e) for e in edges)
    return (
        min(max(left, 0), width),
        min(max(top, 0), height),
        min(max(right, 0), width),
        min(max(bottom, 0), height),
    )


def _landmarks(m: models.Models, work: np.ndarray, rect: Any, sx: float, sy: float) -> np.ndarray:
    """5 landmarks predicted on the work copy, as (5, 2) float pixel centres of the original."""
    shape = m.landmarks(work, rect)
    pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)  # (5, 2) work pixels
    return (pts + 0.5) / np.array([sx, sy]) - 0.5


def detect(
    image: np.ndarray,
    upsample: int = 1,
    *,
    method: Literal["hog", "cnn"] = "hog",
    min_score: float = 0.0,
    max_side: int | None = None,
) -> list[Face]:
    """Faces in ``image`` ((H, W, 3) uint8 RGB, upright), largest first (ties: higher score).

    ``upsample`` doubles the detector's copy that many times to find smaller faces (on top
    of the automatic resizing described in the module docstring). ``min_score`` is the HOG
    SVM margin to keep a detection (dlib's default 0; weak false hits score ~0.1, clear
    faces ~1); for the CNN it is the minimum confidence. ``max_side`` defaults to
    ``HOG_MAX_SIDE`` or ``CNN_MAX_SIDE``. Raises :class:`~cameo.faces.FacesUnavailable`.
    """
    if method not in ("hog", "cnn"):
        raise ValueError(f"method must be 'hog' or 'cnn', got {method!r}")
    rgb = as_rgb(image)
    m = models.load()
    height, width = rgb.shape[:2]
    limit = max_side or (CNN_MAX_SIDE if method == "cnn" else HOG_MAX_SIDE)
    work = resize(rgb, work_scale(height, width, limit))
    # exact per-axis factors of the rounded work size, so the edges map back exactly
    sx, sy = work.shape[1] / width, work.shape[0] / height
    with models.LOCK:
        if method == "cnn":
            hits = [(d.rect, d.confidence) for d in models.load_cnn()(work, upsample)]
            hits = [(r, s) for r, s in hits if s >= min_score]
        else:
            rects, scores, _ = m.hog.run(work, upsample, min_score)
            hits = list(zip(rects, scores, strict=True))
        faces = [
            Face(
                box=_map_box(rect, sx, sy, height, width),
                score=float(score),
                landmarks=_landmarks(m, work, rect, sx, sy),
            )
            for rect, score in hits
        ]
    faces = [f for f in faces if f.area > 0]
    return sorted(faces, key=lambda f: (f.area, f.score), reverse=True)
