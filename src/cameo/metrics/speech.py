"""Visible speech: how far a clip's mouth opens and closes, as the eyes' mouth probe reads it.

The attribute probe's ``mouth`` head regresses the mouth opening of a 64 px frame (0 closed,
about 1 wide open; held-out error 0.10). Speech is motion, so a clip's measure is the range of
that reading over its frames (max - min): a speaking world person opens and closes the mouth
at a syllable rhythm, a silent one keeps it still. The threshold between the two is the one
the eyes' prompt fidelity uses for "speaking" (``Eyes.speaking_threshold``): fitted on real
speaking and silent renders of eyes-split people, 0.96 accurate on held-out people's
(docs/measurement.md).
"""

from __future__ import annotations

import numpy as np
import torch

from .nets import to_input
from .world_identity import Eyes, to_model_size


@torch.no_grad()
def mouth_range(eyes: Eyes, frames: np.ndarray) -> float:
    """Range (max - min) of the mouth opening over a one-person clip uint8 (F, H, W, 3)."""
    mouth = eyes.probe(to_input(to_model_size(frames)))["mouth"]  # (F,)
    return float(mouth.max() - mouth.min())


def speech_visible(ranges: list[float], threshold: float) -> float:
    """Share of clips whose mouth range passes ``threshold`` (the speaking threshold)."""
    return float(np.mean([r > threshold for r in ranges])) if ranges else float("nan")
