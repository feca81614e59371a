"""Labelled stills of world people: what the eyes learn from and are validated on.

A still is one rendered 64x64 photo of a person (or a 64x128 canvas of one or two people) with
a random mouth opening and blink, and the labels every probe head reads from it.
"""

from __future__ import annotations

import random

import numpy as np

from ..world import Figure, Motion, Scene, identity, render
from ..world.traits import BACKGROUND_COLOURS
from .nets import PROBE_CLASSES


def random_still(
    split: str, index: int, rng: random.Random, width: int = 64, two: bool = False
) -> tuple[np.ndarray, dict]:
    """A photo of person ``index`` of ``split`` (uint8 (64, width, 3)) and its labels; ``two``
    puts a second, random person beside them on a wide canvas."""
    scene = Scene.sample(rng)
    aspect = width / 64

    def motion(sc: Scene) -> Motion:
        mouth = 0.0 if rng.random() < 0.4 else rng.uniform(0.05, 1.0)
        eye = 1.0 if rng.random() < 0.9 else rng.uniform(0.05, 1.0)
        return Motion([mouth], [eye], [sc.yaw], [sc.pitch], [sc.roll], [0.0], [0.0])

    if two:
        other = rng.randrange(10**6)
        figs = []
        for key, slot in ((index, -aspect / 2), (other, aspect / 2)):
            sc = Scene.sample(rng)
            figs.append(Figure(identity(split, key), sc, motion(sc), slot_x=slot, scale=1.15))
    else:
        slot = rng.uniform(-(aspect - 1), aspect - 1) if width > 64 else 0.0
        figs = [Figure(identity(split, index), scene, motion(scene), slot_x=slot)]
    pix = render(figs, scene, 64, width)[0]
    f = figs[0]
    labels = {
        "hair": -100
        if f.identity.hair_style == "bald"
        else PROBE_CLASSES["hair"].index(f.identity.hair_name),
        "background": BACKGROUND_COLOURS.index(scene.background_name),
        "glasses": PROBE_CLASSES["glasses"].index(f.identity.glasses),
        "hat": PROBE_CLASSES["hat"].index(f.scene.hat),
        "people": len(figs) - 1,
        "mouth": f.motion.mouth_open[0],
        "yaw": f.scene.yaw,
        "pitch": f.scene.pitch,
    }
    return pix, labels
