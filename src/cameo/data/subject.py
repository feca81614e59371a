"""Whose photos these are: the faces in each photo and which of them is the subject.

The subject of a folder is whoever most photos show: the element-wise median of the largest
face's descriptor over the photos (a median, so a few photos of someone else do not move it),
refined once with the faces chosen by it. In each photo the subject is the face nearest that
median; with one photo, or where no descriptor can be made, the largest face.

Everything here goes through :mod:`cameo.faces`; without the faces extra nothing is found and
callers fall back to centre crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .. import faces as facelib
from .buckets import Box

FACE_MIN_SCORE = 0.5  # HOG margin below which a detection is ignored (weak false hits ~0.1)
MAX_DESCRIBED = 8  # faces described per photo (a crowd's far faces need no identity)


@dataclass
class FoundFace:
    """One face in an image's pixels, with its identity descriptor when one could be made."""

    box: tuple[int, int, int, int]  # (left, top, right, bottom), right/bottom exclusive
    score: float
    descriptor: np.ndarray | None = None  # (128,) float32

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]


def faces_available() -> bool:
    """Whether the faces extra is installed (read through the module, so tests can hide it)."""
    return facelib.available()


def find_faces(image: np.ndarray, describe: bool = True) -> list[FoundFace]:
    """Faces in an upright (H, W, 3) uint8 image, largest first; the first ``MAX_DESCRIBED``
    with descriptors. Raises :class:`cameo.faces.FacesUnavailable` without the extra."""
    found = facelib.detect(image, min_score=FACE_MIN_SCORE)
    out = []
    for i, f in enumerate(found):
        vec = facelib.describe(image, f) if describe and i < MAX_DESCRIBED else None
        out.append(FoundFace(tuple(int(v) for v in f.box), f.score, vec))
    return out


def median_descriptor(descriptors: Sequence[np.ndarray]) -> np.ndarray | None:
    """Element-wise median of (128,) descriptors; None for fewer than two."""
    if len(descriptors) < 2:
        return None
    return np.median(np.stack(descriptors), axis=0)


def pick_subject(found: Sequence[FoundFace], reference: np.ndarray | None) -> int | None:
    """Index of the subject among ``found``: nearest ``reference`` when there are several
    described faces and a reference, else the largest; None without faces."""
    if not found:
        return None
    described = [i for i, f in enumerate(found) if f.descriptor is not None]
    if reference is None or len(described) < 2:
        return 0
    return min(described, key=lambda i: float(facelib.distances(found[i].descriptor, reference)))


def folder_reference(photos: Sequence[Sequence[FoundFace]]) -> np.ndarray | None:
    """The folder's subject: median of the largest faces, refined once with the faces that
    median picks in each photo."""
    first = median_descriptor(
        [f[0].descriptor for f in photos if f and f[0].descriptor is not None]
    )
    if first is None:
        return None
    chosen = [f[pick_subject(f, first)].descriptor for f in photos if f]
    return median_descriptor([d for d in chosen if d is not None])


def distances_to_others(descriptors: Sequence[np.ndarray | None]) -> list[float | None]:
    """Each descriptor's distance to the median of the *other* photos' subjects (None where
    there is no descriptor or no other photo to compare with)."""
    out: list[float | None] = []
    for i, d in enumerate(descriptors):
        others = [o for j, o in enumerate(descriptors) if j != i and o is not None]
        if d is None or not others:
            out.append(None)
            continue
        ref = others[0] if len(others) == 1 else np.median(np.stack(others), axis=0)
        out.append(float(facelib.distances(d, ref)))
    return out


def union(boxes: Sequence[Box]) -> Box:
    """The smallest box holding all of ``boxes``."""
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )
