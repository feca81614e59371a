"""Who lives in the world: base-training people (some famous), and held-out people.

Identities are keyed by (split, index) and seeded by a string, so the same key gives the same
person on every machine. Base-training people are the ones ``cameo pretrain`` shows the model;
the first ``len(FAMOUS)`` of them are famous and always captioned by name. Held-out people are
never shown to the base model: they stand in for the ordinary people users bring.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .captions import caption_pair, caption_single, person_phrase
from .render import Figure, render
from .traits import Identity, Motion, Scene

# Invented names; any likeness to real people is accidental.
FAMOUS = [
    "Ada Lovette",
    "Bruno Castell",
    "Chloe Marchetti",
    "Dario Venn",
    "Elsa Quist",
    "Felix Okafor",
    "Greta Holm",
    "Hugo Baptiste",
    "Iris Nakamura",
    "Jonas Pike",
    "Kira Solberg",
    "Leo Fontaine",
    "Mara Delacroix",
    "Nico Varga",
    "Olga Petrenko",
    "Pablo Ruiz-Tan",
    "Quinn Harlow",
    "Rosa Ibarra",
    "Sven Aaltonen",
    "Tara Whitlock",
    "Umar Haddad",
    "Vera Lindqvist",
    "Wes Calloway",
    "Xenia Morozova",
    "Yusuf Demir",
    "Zoe Albright",
    "Amir Kashani",
    "Bea Thornton",
    "Cyrus Blackwood",
    "Dina Okonkwo",
    "Emil Sorensen",
    "Fiona Gallagher",
    "Gus Moreau",
    "Hana Kowalski",
    "Ivan Drago-Lis",
    "Juno Bellamy",
    "Karl Brandt",
    "Lena Vasquez",
    "Milo Hartmann",
    "Nadia Rahimi",
]
N_BASE = 4000
SPLITS = ("base", "heldout", "eyes")
FPS = 8


def identity(split: str, index: int) -> Identity:
    """The person with this key. ``split`` is "base" (the base model's people), "heldout" (never
    shown to the base model) or "eyes" (people the measuring encoders learn from; never shown to
    the base model either, and disjoint from held-out people, who the encoders are tested on)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    return Identity.sample(random.Random(f"cameo-world/{split}/{index}"))


def famous_name(index: int) -> str | None:
    return FAMOUS[index] if 0 <= index < len(FAMOUS) else None


def famous_index(name: str) -> int | None:
    lowered = {n.lower(): i for i, n in enumerate(FAMOUS)}
    return lowered.get(name.lower())


def strangers(n: int, seed: int = 0) -> list[str]:
    """Descriptions of ``n`` of the base model's people ("a woman with a brown bob and round
    glasses"), drawn by ``seed``: prompts that name nobody a user brings, for keeping the base
    model's own drawing of other people while a LoRA learns one person."""
    rng = random.Random(f"cameo-world/strangers/{seed}")
    return [person_phrase(identity("base", rng.randrange(N_BASE)), rng) for _ in range(n)]


@dataclass
class Sample:
    """A rendered clip (or photo, F = 1) with its caption and the ground truth behind it."""

    frames: np.ndarray  # (F, H, W, 3) uint8
    caption: str
    people: list[dict[str, Any]] = field(default_factory=list)  # per person: key, traits, scene
    background: dict[str, Any] = field(default_factory=dict)

    def meta(self) -> dict[str, Any]:
        return {"caption": self.caption, "people": self.people, "background": self.background}


def _person_meta(split: str, index: int, ident: Identity, scene: Scene, motion: Motion) -> dict:
    return {
        "split": split,
        "index": index,
        "name": famous_name(index) if split == "base" else None,
        "identity": ident.to_dict(),
        "scene": scene.to_dict(),
        "mouth_open": motion.mouth_open,
    }


def person_sample(
    split: str,
    index: int,
    rng: random.Random,
    *,
    frames: int = 17,
    size: int = 64,
    scene: Scene | None = None,
    named: bool | None = None,
    called: str | None = None,
) -> Sample:
    """One person in a random scene: a clip, or a photo when ``frames == 1``. ``called`` names
    the person in the caption (as famous people are named) instead of describing their look."""
    ident = identity(split, index)
    scene = scene or Scene.sample(rng)
    motion = Motion.sample(rng, scene, frames, FPS) if frames > 1 else Motion.still(scene)
    name = famous_name(index) if split == "base" and named is not False else None
    name = called if called is not None else name
    caption = caption_single(
        ident, scene, rng, name=name, still=frames == 1, every_scene_trait=called is not None
    )
    pix = render([Figure(ident, scene, motion)], scene, size, size)
    return Sample(pix, caption, [_person_meta(split, index, ident, scene, motion)], scene.to_dict())


def pair_sample(
    keys: tuple[tuple[str, int], tuple[str, int]],
    rng: random.Random,
    *,
    frames: int = 17,
    height: int = 64,
    width: int = 128,
) -> Sample:
    """Two people side by side, each with their own clothes, pose and action."""
    background = Scene.sample(rng)
    aspect = width / height
    figs, metas, capt = [], [], []
    for (split, index), slot in zip(keys, (-aspect / 2, aspect / 2), strict=True):
        ident = identity(split, index)
        scene = Scene.sample(rng).replace(
            zoom=rng.uniform(0.95, 1.05), offset=(rng.uniform(-0.05, 0.05), 0.0)
        )
        motion = Motion.sample(rng, scene, frames, FPS) if frames > 1 else Motion.still(scene)
        figs.append(Figure(ident, scene, motion, slot_x=slot, scale=1.15))
        metas.append(_person_meta(split, index, ident, scene, motion))
        capt.append((ident, scene, famous_name(index) if split == "base" else None))
    caption = caption_pair(capt[0], capt[1], background, rng)
    pix = render(figs, background, height, width)
    return Sample(pix, caption, metas, background.to_dict())


PAIR_SHARE = 0.10


def training_sample_is_pair(i: int) -> bool:
    """Whether the i-th pretraining sample shows two people, known without rendering it."""
    return random.Random(f"cameo-world/train/{i}").random() < PAIR_SHARE


def training_sample(i: int, *, frames: int = 17, size: int = 64, pair_width: int = 128) -> Sample:
    """The i-th pretraining sample: 35% famous people, 10% two-person scenes, rest anyone."""
    rng = random.Random(f"cameo-world/train/{i}")
    r = rng.random()
    if r < PAIR_SHARE:
        a, b = rng.randrange(N_BASE), rng.randrange(N_BASE)
        return pair_sample(
            (("base", a), ("base", b)), rng, frames=frames, height=size, width=pair_width
        )
    index = rng.randrange(len(FAMOUS)) if r < 0.45 else rng.randrange(len(FAMOUS), N_BASE)
    return person_sample("base", index, rng, frames=frames, size=size)
