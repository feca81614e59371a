"""Who a face is: dlib's 128-d ResNet face descriptor, on the face aligned by 5 landmarks.

Two photos of one person lie closer than ``SAME_PERSON_DISTANCE`` (Euclidean) in this space.
The face is aligned and described at the image's own resolution: dlib cuts a 150x150 chip
(padding 0.25) around the landmarks straight from the pixels passed in.
"""

from __future__ import annotations

import numpy as np

from . import models
from .detect import Box, Face, as_rgb, detect

# dlib's published threshold for dlib_face_recognition_resnet_model_v1: two descriptors nearer
# than 0.6 (Euclidean) are the same person; at that threshold the model scores 99.38% on the
# LFW benchmark (http://dlib.net/face_recognition.py.html; model card:
# https://github.com/davisking/dlib-models, dlib_face_recognition_resnet_model_v1.dat).
SAME_PERSON_DISTANCE = 0.6
DESCRIPTOR_SIZE = 128


class NoFaceFound(ValueError):
    """``describe`` found no face and was given no box to describe instead."""


def describe(
    image: np.ndarray,
    face: Face | None = None,
    *,
    box: Box | None = None,
    upsample: int = 1,
) -> np.ndarray:
    """128-d descriptor (float32 (128,)) of one face in ``image`` ((H, W, 3) uint8 RGB).

    Which face: ``face`` (from :func:`detect` on this image), else the explicit ``box``
    ``(left, top, right, bottom)`` in the image's pixels (e.g. a fixed central box on a small
    render the detector misses), else the largest face :func:`detect` finds (``upsample``
    passed on; :class:`NoFaceFound` when there is none). The 5 landmarks are predicted inside
    that box on the image itself, so the descriptor never sees a resized copy.
    """
    rgb = as_rgb(image)
    if face is not None:
        box = face.box
    elif box is None:
        found = detect(rgb, upsample)
        if not found:
            raise NoFaceFound("no face found in the image; pass box= to describe a region")
        box = found[0].box
    left, top, right, bottom = (int(v) for v in box)
    if right <= left or bottom <= top:
        raise ValueError(f"empty box {box}")
    m = models.load()
    rect = m.dlib.rectangle(left, top, right - 1, bottom - 1)  # dlib's corners are inclusive
    with models.LOCK:
        shape = m.landmarks(rgb, rect)
        vec = m.descriptor.compute_face_descriptor(rgb, shape)
    return np.asarray(vec, dtype=np.float32)  # (128,)


def central_box(height: int, width: int, fraction: float = 0.7) -> Box:
    """A centred square box covering ``fraction`` of the shorter side (for small renders)."""
    side = round(min(height, width) * fraction)
    left, top = (width - side) // 2, (height - side) // 2
    return (left, top, left + side, top + side)


def distances(descriptors: np.ndarray, to: np.ndarray) -> np.ndarray:
    """Euclidean distances: (..., 128) against (128,) -> (...)."""
    diff = np.asarray(descriptors, np.float64) - np.asarray(to, np.float64)
    return np.linalg.norm(diff, axis=-1)


def same_person(descriptor_a: np.ndarray, descriptor_b: np.ndarray) -> bool:
    """Whether two descriptors are nearer than dlib's same-person distance."""
    return bool(distances(descriptor_a, descriptor_b) < SAME_PERSON_DISTANCE)
