"""The world judge: cameo's eyes reading clips of cameo-tiny's cartoon world.

A clip is read frame by frame at 64 px: identity embeddings, probe outputs. Two-person clips
(wider than tall) are read per region: the left and right halves, each holding one person.
Identity is the cosine to the references' centroid, normalised by their leave-one-out
similarity, with identification in a line-up of 99 held-out world people; prompt fidelity is
what the attribute probes read against what the prompt states.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .encoders import HFImageEncoder
from .nets import (
    PROBE_CLASSES,
    load_attribute_probe,
    load_identity_encoder,
    load_people_counter,
    to_input,
)
from .scores import (
    centroid,
    frame_similarity,
    identification_rank,
    prompt_attributes,
    prompt_fidelity,
    self_similarity,
    split_regions,
    temporal_consistency,
)
from .stills import random_still
from .train_eyes import speaking_threshold

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
N_DISTRACTORS = 99


@dataclass
class Reading:
    """What the eyes see in one clip (or one region of it)."""

    embeddings: torch.Tensor  # (F, D)
    attributes: dict[str, object]
    mouth: list[float] = field(default_factory=list)


class Eyes:
    """The identity encoder and attribute probes, loaded once."""

    def __init__(
        self,
        identity_path: Path | None = None,
        probe_path: Path | None = None,
        encoder_dir: Path | None = None,
    ):
        """``encoder_dir``: a local transformers vision model to use as identity encoder;
        cameo's own world encoder otherwise. The attribute probes are always cameo's."""
        self.external = None
        if encoder_dir is not None:
            self.external = HFImageEncoder(encoder_dir)
        self.encoder = load_identity_encoder(identity_path)
        self.counter = load_people_counter()
        self.probe = load_attribute_probe(probe_path)
        self.speaking_threshold = speaking_threshold()
        self._distractors: torch.Tensor | None = None

    @torch.no_grad()
    def embed(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames (N, 64, 64, 3) of one person each -> (N, D) unit embeddings."""
        if self.external is not None:
            return torch.cat([self.external(frames[i : i + 32]) for i in range(0, len(frames), 32)])
        return torch.cat(
            [self.encoder(to_input(frames[i : i + 128])) for i in range(0, len(frames), 128)]
        )

    @torch.no_grad()
    def read(self, frames: np.ndarray, whole: np.ndarray | None = None) -> Reading:
        """Read a one-person clip (F, 64, 64, 3); ``whole`` is the full canvas for counting."""
        out = self.probe(to_input(frames))
        attrs: dict[str, object] = {}
        for k in ("hair", "background", "glasses", "hat"):
            votes = out[k].argmax(1).bincount(minlength=len(PROBE_CLASSES[k]))
            attrs[k] = PROBE_CLASSES[k][int(votes.argmax())]
        mouth = out["mouth"].tolist()
        attrs["speaking"] = bool(
            len(frames) > 1 and max(mouth) - min(mouth) > self.speaking_threshold
        )
        counter = self.counter or self.probe
        canvas = counter(to_input(whole if whole is not None else frames))["people"]
        attrs["people"] = int(canvas.argmax(1).float().mean().round()) + 1
        attrs["yaw"] = float(out["yaw"].mean())
        return Reading(self.embed(frames), attrs, mouth)

    def distractors(self) -> torch.Tensor:
        """Centroids of 99 fixed held-out people (5 renders each): the identification lineup."""
        if self._distractors is None:
            self._distractors = torch.stack([centroid(self.embed(p)) for p in distractor_stills()])
        return self._distractors


@functools.cache
def distractor_stills() -> np.ndarray:
    """The line-up's 99 fixed held-out people, 5 renders each: uint8 (99, 5, 64, 64, 3)."""
    rng = random.Random("cameo-eval/distractors")
    return np.stack(
        [
            np.stack([random_still("heldout", 100_000 + k, rng)[0] for _ in range(5)])
            for k in range(N_DISTRACTORS)
        ]
    )


def regions(frames: np.ndarray) -> list[np.ndarray]:
    """One 64-wide region per person: the whole frame, or left and right halves if wide."""
    h, w = frames.shape[1:3]
    if w >= 2 * h:
        return [frames[:, :, : w // 2], frames[:, :, w - w // 2 :]]
    return [frames]


def to_model_size(frames: np.ndarray, height: int = 64) -> np.ndarray:
    """Resize frames (F, H, W, 3) to the eyes' height, keeping the aspect ratio."""
    if frames.shape[1] == height:
        return frames
    w = round(frames.shape[2] * height / frames.shape[1])
    return np.stack([np.asarray(Image.fromarray(f).resize((w, height), Image.BOX)) for f in frames])


def load_references(folder: Path) -> np.ndarray:
    """The subject's photos from a folder, resized to 64x64 (centre crop to square)."""
    files = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_EXT)
    if not files:
        raise FileNotFoundError(f"no photos (png/jpg/webp) in {folder}")
    out = []
    for p in files:
        img = Image.open(p).convert("RGB")
        s = min(img.size)
        left, top = (img.width - s) // 2, (img.height - s) // 2
        out.append(np.asarray(img.crop((left, top, left + s, top + s)).resize((64, 64), Image.BOX)))
    return np.stack(out)


def score_clip(
    eyes: Eyes, frames: np.ndarray, prompt: str, refs: torch.Tensor | None, self_sim: float | None
) -> dict:
    """All metrics for one clip: per person region, identity against the subject's references
    (if given), identification in the lineup, prompt fidelity, temporal consistency."""
    frames = to_model_size(frames)
    parts = regions(frames)
    texts = split_regions(prompt) if len(parts) == 2 else None
    whole_expect = prompt_attributes(prompt)
    people = []
    for i, part in enumerate(parts):
        reading = eyes.read(part, whole=frames)
        expect = prompt_attributes(texts[i]) if texts else dict(whole_expect)
        if texts:
            expect["people"] = 2
        rec: dict[str, object] = {
            "region": ["whole", "left", "right"][0 if len(parts) == 1 else i + 1],
            "observed": reading.attributes,
            "expected": expect,
            "prompt_fidelity": prompt_fidelity(expect, reading.attributes),
            "temporal_consistency": temporal_consistency(reading.embeddings),
        }
        if refs is not None:
            per_frame = frame_similarity(reading.embeddings, refs)
            rec["identity_per_frame"] = [round(float(s), 4) for s in per_frame]
            rec["identity"] = float(per_frame.mean())
            rec["identity_normalised"] = float(per_frame.mean()) / max(self_sim or 1.0, 1e-6)
            gallery = torch.cat([centroid(refs)[None], eyes.distractors()])
            rec["identification_rank"] = identification_rank(centroid(reading.embeddings), gallery)
            rec["identified"] = rec["identification_rank"] == 0
        people.append(rec)
    return {"prompt": prompt, "frames": int(frames.shape[0]), "people": people}


def summarise(clips: list[dict]) -> dict:
    """Means over clips (and regions) of every numeric metric present."""
    keys = [
        "identity",
        "identity_normalised",
        "identified",
        "prompt_fidelity",
        "temporal_consistency",
    ]
    out: dict[str, float] = {"clips": len(clips)}
    for k in keys:
        vals = [float(p[k]) for c in clips for p in c["people"] if p.get(k) is not None]
        if vals:
            out[k if k != "identified" else "identification_rate"] = float(np.mean(vals))
    return out


class WorldJudge:
    """cameo's eyes as the judge of a set of clips, against one subject's 64 px photos."""

    name = "world"

    def __init__(self, eyes: Eyes, photos: np.ndarray | None) -> None:
        """``photos``: the subject's references as uint8 (N, 64, 64, 3), or None."""
        self.eyes = eyes
        self.refs = eyes.embed(photos) if photos is not None else None
        self.self_sim = self_similarity(self.refs) if self.refs is not None else None

    def score(self, frames: np.ndarray, prompt: str) -> dict:
        """One clip's record (:func:`score_clip`)."""
        return score_clip(self.eyes, frames, prompt, self.refs, self.self_sim)

    def summarise(self, clips: list[dict]) -> dict:
        """Means over clips (:func:`summarise`)."""
        return summarise(clips)

    def report_fields(self) -> dict:
        """What a report says about the references."""
        return {"reference_self_similarity": self.self_sim}

    def leakage(self, lora: dict, base: dict) -> dict:
        """Identity on prompts that do not name the subject, with the LoRA minus without."""
        lo, ba = lora.get("identity"), base.get("identity")
        return {} if lo is None or ba is None else {"leakage": lo - ba}
