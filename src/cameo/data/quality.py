"""Measurements of one photo for the photo check: sharpness, exposure, near-duplicate hash,
and what its caption says. Pure functions of pixels and text."""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from .buckets import Box

SHARPNESS_WIDTH = 128  # regions are measured at most this wide, so sizes compare
# Blurry: the face's sharpness (variance of the Laplacian at <= 128 px wide) under this share
# of the folder's median, or under the absolute floor. Measured on the astronaut enlarged 4x
# into a 3024x4032 photo: sharp 245; Gaussian blur of radius 2 px 98 (0.40 of sharp), 4 px 26
# (0.10), 8 px 6.6; the astronaut's own 91 px face 843 (blur 1 px: 73, 2 px: 12); LFW's 25 px
# faces enlarged to 300 px 6-16.
BLUR_RELATIVE = 0.35
BLUR_ABSOLUTE = 20.0
# The face's mean grey level (0-255) outside these, or CLIPPED_SHARE of it at 0-5 or 250-255:
# badly exposed. The astronaut's face: 163; darkened to 0.3x: 48; brightened 1.6x: 223, with
# 58% clipped.
DARK_MEAN, BRIGHT_MEAN = 55.0, 210.0
CLIPPED_SHARE = 0.25
NEAR_DUPLICATE_BITS = 3  # average-hash distance at or below which two photos are near duplicates

# Words for the person's own look. A caption should name what changes between photos (pose,
# expression, clothes, place, light); the trigger word has to carry the look.
LOOK_PATTERNS = (
    r"(?:blond|blonde|brunette|redhead|ginger|auburn|bald|balding)",
    r"(?:red|black|brown|blond|blonde|grey|gray|white|dark|light|silver|golden)[- ]haired",
    r"(?:red|black|brown|blond|blonde|grey|gray|white|dark|light|silver|golden|auburn|curly|"
    r"straight|wavy|short|long|spiky) hair",
    r"(?:blue|brown|green|hazel|grey|gray|dark|amber)[- ]eyed?s?",
    r"(?:asian|african|caucasian|hispanic|latino|latina|european|arab|indian|ethnic\w*)",
    r"(?:young|old|elderly|aged|teenage|teen|teenager|middle-aged|\d+-year-old)",
    r"in (?:his|her|their) (?:\d0s|twenties|thirties|forties|fifties|sixties|seventies)",
    r"(?:glasses|spectacles|bespectacled)",
    r"(?:beard|bearded|moustache|mustache|stubble|freckles|freckled)",
    r"(?:pale|tanned|dark)[- ]skinned|(?:pale|fair|dark|olive) skin",
)
_LOOK = re.compile(r"\b(?:" + "|".join(LOOK_PATTERNS) + r")\b", re.IGNORECASE)


def _region(image: np.ndarray, box: Box | None) -> np.ndarray:
    """Grey (h, w) float32 of ``box`` (or the central half of the image), at most
    ``SHARPNESS_WIDTH`` wide."""
    h, w = image.shape[:2]
    if box is None:
        box = (w / 4, h / 4, 3 * w / 4, 3 * h / 4)
    left, top, right, bottom = (round(v) for v in box)
    crop = Image.fromarray(image[max(top, 0) : bottom, max(left, 0) : right]).convert("L")
    if crop.width > SHARPNESS_WIDTH:
        size = (SHARPNESS_WIDTH, max(1, round(crop.height * SHARPNESS_WIDTH / crop.width)))
        crop = crop.resize(size, Image.BOX)
    return np.asarray(crop, dtype=np.float32)


def sharpness(image: np.ndarray, box: Box | None = None) -> float:
    """Variance of the Laplacian of the face ``box`` (or the image's centre) in grey levels:
    high for sharp edges, low for blur (Pech-Pacheco et al., ICPR 2000)."""
    g = _region(image, box)
    if min(g.shape) < 3:
        return 0.0
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def exposure(image: np.ndarray, box: Box | None = None) -> tuple[float, float, float]:
    """(mean grey level, share at 0-5, share at 250-255) of ``box`` (or the image's centre)."""
    g = _region(image, box)
    return float(g.mean()), float((g <= 5).mean()), float((g >= 250).mean())


def exposure_problem(mean: float, dark: float, bright: float) -> str:
    """ "under-exposed", "over-exposed" or ""."""
    if mean < DARK_MEAN or dark > CLIPPED_SHARE:
        return "under-exposed"
    if mean > BRIGHT_MEAN or bright > CLIPPED_SHARE:
        return "over-exposed"
    return ""


def look_words(caption: str) -> list[str]:
    """The words of ``caption`` that describe the person's own look, in order, once each."""
    return list(dict.fromkeys(m.group(0).lower() for m in _LOOK.finditer(caption)))


def average_hash(frame: np.ndarray, size: int = 8) -> np.ndarray:
    """64-bit average hash of a frame: grey 8x8, thresholded at its mean (for near duplicates)."""
    grey = np.asarray(
        Image.fromarray(frame).convert("L").resize((size, size), Image.BOX), dtype=np.float32
    )
    return (grey > grey.mean()).flatten()
