"""A deterministic procedural world of people: identities, scenes, motion, captions, renders."""

from .captions import caption_pair, caption_single, person_phrase
from .population import (
    FAMOUS,
    FPS,
    N_BASE,
    Sample,
    famous_index,
    famous_name,
    identity,
    pair_sample,
    person_sample,
    strangers,
    training_sample,
    training_sample_is_pair,
)
from .render import Figure, render
from .traits import Identity, Motion, Scene

__all__ = [
    "FAMOUS",
    "FPS",
    "N_BASE",
    "Figure",
    "Identity",
    "Motion",
    "Sample",
    "Scene",
    "caption_pair",
    "caption_single",
    "famous_index",
    "famous_name",
    "identity",
    "pair_sample",
    "person_phrase",
    "person_sample",
    "render",
    "strangers",
    "training_sample",
    "training_sample_is_pair",
]
