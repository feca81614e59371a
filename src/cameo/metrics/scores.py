"""Metric arithmetic on embeddings and probe readings: pure functions, no models inside.

Shapes: frame embeddings (F, D) and reference embeddings (R, D), unit length rows.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from ..world.captions import ACTION_WORDS, split_pair_caption
from ..world.traits import BACKGROUND_COLOURS, HAIR_COLOURS

Tensor = torch.Tensor


def centroid(emb: Tensor) -> Tensor:
    """Unit mean direction of a set of embeddings (D,)."""
    return F.normalize(emb.mean(0), dim=-1)


def frame_similarity(frames: Tensor, refs: Tensor) -> Tensor:
    """Cosine of each frame to the reference centroid, (F,)."""
    return frames @ centroid(refs)


def self_similarity(refs: Tensor) -> float:
    """What a real photo of the subject scores: each reference against the centroid of the
    others (leave one out), averaged. Generated clips are normalised by this."""
    if len(refs) < 2:
        return 1.0
    sims = [
        float(refs[i] @ centroid(torch.cat([refs[:i], refs[i + 1 :]]))) for i in range(len(refs))
    ]
    return sum(sims) / len(sims)


def identification_rank(clip: Tensor, gallery: Tensor, subject: int = 0) -> int:
    """Rank (0 = top-1) of the subject's gallery row by cosine to the clip embedding."""
    sims = gallery @ F.normalize(clip, dim=-1)
    return int((sims > sims[subject]).sum())


def temporal_consistency(frames: Tensor) -> float:
    """Mean cosine between consecutive frames' embeddings (1.0 = the identity never drifts)."""
    if len(frames) < 2:
        return 1.0
    return float((frames[1:] * frames[:-1]).sum(-1).mean())


# ----------------------------------------------------------------- what a prompt states

_HAIR = "|".join(HAIR_COLOURS)
_BG = "|".join(BACKGROUND_COLOURS)
_SPEAK = sorted(ACTION_WORDS["speaking"], key=len, reverse=True)
_SILENT = sorted(ACTION_WORDS["silent"], key=len, reverse=True)


def prompt_attributes(prompt: str) -> dict[str, object]:
    """Attributes a prompt states that the probes can check: hair colour, background colour,
    glasses, hat, speaking, number of people. Unstated attributes are absent."""
    p = prompt.lower()
    out: dict[str, object] = {}
    m = re.search(rf"\b({_HAIR})\b (?:\w+ ){{0,2}}?(?:hair|bob|buzz cut)", p)
    if m:
        out["hair"] = m.group(1)
    m = re.search(
        rf"\b({_BG})\b (?:\w+ )?(?:wall|walls|background|backdrop|room)\b", p
    ) or re.search(rf"room with ({_BG}) walls", p)
    if m:
        out["background"] = m.group(1)
    m = re.search(r"\b(round|square|no) glasses\b|\bwithout glasses\b", p)
    if m:
        out["glasses"] = "none" if m.group(1) in (None, "no") else m.group(1)
    m = re.search(r"\b(top hat|beanie|cap)\b", p)
    if m:
        out["hat"] = m.group(1)
    elif "no hat" in p:
        out["hat"] = "none"
    if any(w in p for w in _SILENT):
        out["speaking"] = False
    elif any(w in p for w in _SPEAK):
        out["speaking"] = True
    if "two people" in p or ("on the left" in p and "on the right" in p):
        out["people"] = 2
    return out


def split_regions(prompt: str) -> tuple[str, str] | None:
    """For 'two people ...: on the left A, on the right B', the texts about A and about B, each
    with the shared scene (the parser that generation uses, so a region is scored on what it
    was asked for)."""
    parts = split_pair_caption(prompt)
    if parts is None:
        return None
    left, right, scene = parts
    return f"{left}, {scene}", f"{right}, {scene}"


def prompt_fidelity(expected: dict[str, object], observed: dict[str, object]) -> float | None:
    """Share of the stated attributes that the probes found; None when nothing was stated."""
    keys = [k for k in expected if k in observed]
    if not keys:
        return None
    return sum(observed[k] == expected[k] for k in keys) / len(keys)
