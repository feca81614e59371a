"""Visible speech on real faces: how far the mouth opens, from dlib's 68 landmarks.

The 68-point model (iBUG 300-W layout, 0-based) marks the eyes at 36-41 and 42-47 and the
inner lips at 60-67: the upper inner lip 61, 62, 63 above the lower 67, 66, 65. A frame's
mouth opening is the mean gap between those three pairs, measured along the face's vertical
(perpendicular to the line through the eye centres, so a tilted head reads alike), over the
distance between the eye centres (so a near face and a far one read alike): about 0.15 for
lips at rest over teeth, 0.5 for a mouth open wide.

Speech is motion, so a clip's measure is the range of the opening over the frames in which
a face is found (max - min). There is no calibrated threshold between speaking and silent
real faces: ranges are compared, a clip with a LoRA against the base's clip.
"""

from __future__ import annotations

import numpy as np

from . import models
from .detect import Box, as_rgb, detect

LEFT_EYE = slice(36, 42)  # the eye on the image's left
RIGHT_EYE = slice(42, 48)
UPPER_INNER_LIP = [61, 62, 63]
LOWER_INNER_LIP = [67, 66, 65]  # below 61, 62, 63 in turn


def mouth_opening(points: np.ndarray) -> float:
    """Mouth opening of one face's 68 landmarks (68, 2) (x, y pixels, y down): the inner
    lips' mean gap along the face's vertical over the distance between the eye centres."""
    p = np.asarray(points, np.float64)
    across = p[RIGHT_EYE].mean(0) - p[LEFT_EYE].mean(0)  # (2,) left eye -> right eye
    eyes = float(np.linalg.norm(across))
    if eyes == 0.0:
        raise ValueError("the eye centres coincide: not a face's landmarks")
    down = np.array([-across[1], across[0]]) / eyes  # unit vector from brows towards chin
    gaps = (p[LOWER_INNER_LIP] - p[UPPER_INNER_LIP]) @ down  # (3,)
    return float(gaps.mean() / eyes)


def landmarks68(image: np.ndarray, box: Box) -> np.ndarray:
    """The 68 landmarks (68, 2) of the face in ``box`` (left, top, right, bottom; right and
    bottom exclusive) of ``image`` ((H, W, 3) uint8 RGB), in its pixels."""
    rgb = as_rgb(image)
    m = models.load()
    predictor = models.load_landmarks68()
    left, top, right, bottom = (int(v) for v in box)
    rect = m.dlib.rectangle(left, top, right - 1, bottom - 1)  # dlib's corners are inclusive
    with models.LOCK:
        shape = predictor(rgb, rect)
    return np.array([(q.x, q.y) for q in shape.parts()], np.float64)  # (68, 2)


def frame_openings(frames: np.ndarray) -> np.ndarray:
    """Mouth opening of the largest face in each frame of uint8 (F, H, W, 3): (F,) float,
    NaN where no face is found. Raises :class:`~cameo.faces.FacesUnavailable`."""
    out = np.full(len(frames), np.nan)
    for i, frame in enumerate(frames):
        found = detect(frame)
        if found:
            out[i] = mouth_opening(landmarks68(frame, found[0].box))
    return out


def mouth_range(frames: np.ndarray) -> float | None:
    """Range (max - min) of the mouth opening over a clip uint8 (F, H, W, 3), over the frames
    in which a face is found; None with fewer than two such frames."""
    openings = frame_openings(frames)
    openings = openings[~np.isnan(openings)]
    return float(openings.max() - openings.min()) if len(openings) >= 2 else None
