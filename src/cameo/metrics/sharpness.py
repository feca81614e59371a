"""Sharpness: how much fine detail a clip's frames hold, as a person sees it.

The measure is the mean absolute Laplacian of the frames' luminance,

    L(x, y) = 4 I(x, y) - I(x-1, y) - I(x+1, y) - I(x, y-1) - I(x, y+1),

averaged over pixels and frames (interior pixels only, 0-255 scale). Why this one:

- the Laplacian's response grows with the square of spatial frequency, so it weighs the
  finest detail most: at 64 px an eye, a mouth line or a glasses rim is one or two pixels
  wide, and those are what a blurred clone loses first while its colours and layout stay;
- a blur is a low-pass filter, so it can only lower this number (a Gaussian of sigma 2 px
  keeps under a tenth of it on a world render; tests/test_sharpness_speech.py);
- the mean of the absolute value, not the variance, so a few hard edges (a patterned wall, the
  border of a hat) do not outweigh the face.

It is compared only between clips of the same size and scenes (a clone against the person's
real render of the same prompt): a plain wall scores near 0, a striped one high, so the ratio
is what means something, not the level.
"""

from __future__ import annotations

import numpy as np

LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights


def luminance(frames: np.ndarray) -> np.ndarray:
    """uint8 (..., H, W, 3) -> float64 (..., H, W) on the 0-255 scale."""
    return np.asarray(frames, np.float64) @ LUMA


def laplacian_energy(frames: np.ndarray) -> float:
    """Mean absolute 4-neighbour Laplacian of the luminance of uint8 frames (F, H, W, 3) or
    one image (H, W, 3); border pixels are left out (they have no four neighbours)."""
    y = luminance(frames)
    if y.ndim == 2:
        y = y[None]
    lap = (
        4 * y[:, 1:-1, 1:-1] - y[:, :-2, 1:-1] - y[:, 2:, 1:-1] - y[:, 1:-1, :-2] - y[:, 1:-1, 2:]
    )  # (F, H-2, W-2)
    return float(np.abs(lap).mean())


def sharpness_ratio(clips: list[np.ndarray], real: list[np.ndarray]) -> float:
    """Mean Laplacian energy of ``clips`` over that of ``real`` (the same scenes, in order);
    1.0 is as sharp as the real renders, below 1 blurrier."""
    gen = np.mean([laplacian_energy(c) for c in clips])
    ref = np.mean([laplacian_energy(c) for c in real])
    return float(gen / max(ref, 1e-9))
