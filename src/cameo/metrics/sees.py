"""What a person sees in ``cameo eval --lora``'s clips, beside the judge's identity numbers.

The judges read coarse cues; these measures read what a viewer notices first. On the clips of
the prompts that name the subject, each made with the LoRA and with the base model (same
prompts, same seeds):

- **sharpness**: the mean absolute Laplacian (:mod:`cameo.metrics.sharpness`) of the LoRA's
  clips, the base's clips and the reference photos fitted (centre crop) to the frame size.
  ``sharpness_ratio`` (LoRA / base) says whether the LoRA blurred or sharpened the base, on the
  very same scenes; ``sharpness_of_photos`` (LoRA / photos) is indicative only, the photos
  showing other scenes.
- **visible speech**, on the clips whose prompt asks to speak: the range of the mouth opening
  over a clip. The world judge reads it with the eyes' mouth probe and counts the clips over
  their speaking threshold (:mod:`cameo.metrics.speech`); the face judge reads it from dlib's
  68 landmarks (:mod:`cameo.faces.mouth`), which have no calibrated threshold, so only the
  ranges and their ratio are reported.
- **a second identity judge** on cameo-tiny: dlib's face descriptor in the line-up of the
  eyes' distractors (:mod:`cameo.metrics.face_lineup`), which cameo's training never saw.

Two-person (wide) clips count for sharpness only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .. import faces
from ..faces.models import INSTALL_HINT
from ..faces.mouth import mouth_range as landmark_mouth_range
from . import world_identity
from .face_lineup import FaceLineup, person_descriptor
from .scores import prompt_attributes
from .sharpness import laplacian_energy
from .speech import mouth_range as probe_mouth_range
from .speech import speech_visible
from .world_identity import Eyes

NO_FACE_IN_PHOTOS = "no face in the photos"
NO_FACES_EXTRA = f"not run: needs the faces extra ({INSTALL_HINT})"
WORLD_SIZE = 64  # the world's people are drawn and judged at 64 px
LINEUP_CACHE = "face-lineup-v1-{digest}.npy"  # v1: FaceLineup.from_stills's gallery
_lineups: dict[str, FaceLineup] = {}  # by the stills' digest, for this process


def asks_to_speak(prompt: str) -> bool:
    """Whether ``prompt`` asks the person to speak (``speaking``, ``talking``, ...)."""
    return prompt_attributes(prompt).get("speaking") is True


def fit_photos(photos: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """Photos uint8 (H, W, 3) of any sizes, centre-cropped to the aspect of and resized to
    (height, width), as training fits them: uint8 (N, height, width, 3)."""
    return np.stack(
        [
            np.asarray(ImageOps.fit(Image.fromarray(p), (width, height), Image.Resampling.LANCZOS))
            for p in photos
        ]
    )


def cache_dir() -> Path:
    """The folder cameo keeps rebuildable measuring data in: ``$XDG_CACHE_HOME/cameo``,
    else ``~/.cache/cameo``."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cameo"


def world_face_lineup() -> FaceLineup:
    """dlib's line-up of the eyes' 99 distractors (``distractor_stills``), built once and kept
    in :func:`cache_dir` under the stills' digest (so a change of the world makes a new one);
    a cache folder that cannot be written only costs the rebuild."""
    stills = world_identity.distractor_stills()
    digest = hashlib.sha256(stills.tobytes()).hexdigest()[:16]
    if digest in _lineups:
        return _lineups[digest]
    path = cache_dir() / LINEUP_CACHE.format(digest=digest)
    lineup = FaceLineup.from_stills(lambda: stills, path)
    _lineups[digest] = lineup
    return lineup


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


class PersonSees:
    """The measures of the module docstring for one evaluation: :meth:`clip` per clip (as it
    is made, so no clip is kept), :meth:`summarise` over the LoRA's and the base's."""

    def __init__(
        self,
        judge: str,
        photos: Sequence[np.ndarray],
        *,
        eyes: Eyes | None = None,
        second_judge: bool = False,
    ) -> None:
        """``judge``: ``world`` (needs ``eyes``) or ``face``; ``photos``: the reference photos
        uint8 (H, W, 3); ``second_judge``: also judge the world's clips by dlib's descriptor
        in a line-up (the faces extra; ignored for the face judge)."""
        if judge not in ("world", "face"):
            raise ValueError(f"no judge {judge!r}")
        if judge == "world" and eyes is None:
            raise ValueError("the world judge's speech needs the eyes")
        self.judge, self.eyes = judge, eyes
        self.photos = [np.asarray(p) for p in photos]
        self._photo_sharpness: dict[tuple[int, int], float] = {}
        self.lineup: FaceLineup | None = None
        self.person: np.ndarray | None = None  # (128,) dlib descriptor of the photos' faces
        self.face_note: str | None = None
        if second_judge and judge == "world":
            self._second_judge()

    def _second_judge(self) -> None:
        if not faces.available():
            self.face_note = NO_FACES_EXTRA
            return
        self.person = person_descriptor(fit_photos(self.photos, WORLD_SIZE, WORLD_SIZE))
        if self.person is None:
            self.face_note = NO_FACE_IN_PHOTOS
            return
        self.lineup = world_face_lineup()

    def photo_sharpness(self, height: int, width: int) -> float:
        """Mean Laplacian energy of the photos fitted to (height, width)."""
        if (height, width) not in self._photo_sharpness:
            fitted = fit_photos(self.photos, height, width)
            self._photo_sharpness[height, width] = float(
                np.mean([laplacian_energy(p) for p in fitted])
            )
        return self._photo_sharpness[height, width]

    def clip(self, frames: np.ndarray, prompt: str) -> dict:
        """One clip uint8 (F, H, W, 3) of ``prompt`` (the frames the judge scores): its
        ``sharpness``, ``mouth_range`` where the prompt asks to speak, and the second judge's
        ``face_identified`` and ``face_found``."""
        height, width = frames.shape[1:3]
        rec: dict[str, object] = {
            "frame_size": [int(height), int(width)],
            "sharpness": laplacian_energy(frames),
        }
        one_person = self.judge == "face" or len(world_identity.regions(frames)) == 1
        if one_person and asks_to_speak(prompt):
            if self.judge == "world":
                rec["mouth_range"] = probe_mouth_range(self.eyes, frames)
            else:  # dlib's 68 landmarks, loaded on the first speaking clip
                rec["mouth_range"] = landmark_mouth_range(frames)
        if self.lineup is not None and one_person:
            judged = self.lineup.judge(self.person, world_identity.to_model_size(frames))
            rec["face_identified"] = bool(judged["identified"])
            rec["face_found"] = judged["face_found"]
        return rec

    def summarise(self, lora: list[dict], base: list[dict]) -> dict:
        """The report's ``sees``: the :meth:`clip` records of the LoRA's clips and of the
        base's (the same prompts and seeds)."""
        sharp_lora = float(np.mean([r["sharpness"] for r in lora]))
        sharp_base = float(np.mean([r["sharpness"] for r in base]))
        sharp_photos = float(np.mean([self.photo_sharpness(*r["frame_size"]) for r in lora]))
        out: dict[str, object] = {
            "clips": len(lora),
            "sharpness_lora": sharp_lora,
            "sharpness_base": sharp_base,
            "sharpness_photos": sharp_photos,
            "sharpness_ratio": _ratio(sharp_lora, sharp_base),
            "sharpness_of_photos": _ratio(sharp_lora, sharp_photos),
        }
        out.update(self._speech(lora, base))
        out.update(self._face_judge(lora, base))
        return out

    def _speech(self, lora: list[dict], base: list[dict]) -> dict:
        ranges = {
            "lora": [r["mouth_range"] for r in lora if "mouth_range" in r],
            "base": [r["mouth_range"] for r in base if "mouth_range" in r],
        }
        if not ranges["lora"]:
            return {}  # no prompt asks to speak
        out: dict[str, object] = {"speaking_clips": len(ranges["lora"])}
        for variant, values in ranges.items():
            out[f"mouth_range_{variant}"] = _mean(values)
        out["mouth_range_ratio"] = _ratio(out["mouth_range_lora"], out["mouth_range_base"])
        if self.judge == "world":
            threshold = self.eyes.speaking_threshold
            out["speaking_threshold"] = threshold
            for variant, values in ranges.items():
                out[f"speech_visible_{variant}"] = speech_visible(values, threshold)
        return out

    def _face_judge(self, lora: list[dict], base: list[dict]) -> dict:
        if self.face_note is not None:
            return {"face_judge": self.face_note}
        if self.lineup is None:
            return {}
        out: dict[str, object] = {"face_judge": "dlib", "face_lineup": self.lineup.size}
        for variant, recs in (("lora", lora), ("base", base)):
            judged = [r for r in recs if "face_identified" in r]
            out[f"face_identification_{variant}"] = _mean([r["face_identified"] for r in judged])
            out[f"face_found_{variant}"] = _mean([r["face_found"] for r in judged])
        return out


def what_a_person_sees(
    judge: str,
    lora: Sequence[np.ndarray],
    base: Sequence[np.ndarray],
    prompts: Sequence[str],
    photos: Sequence[np.ndarray],
    *,
    eyes: Eyes | None = None,
    second_judge: bool = False,
) -> dict:
    """The ``sees`` of clips made with the LoRA and with the base model (uint8 (F, H, W, 3)
    each, the same ``prompts`` and seeds in turn) against the reference ``photos``."""
    sees = PersonSees(judge, photos, eyes=eyes, second_judge=second_judge)
    return sees.summarise(
        [sees.clip(c, p) for c, p in zip(lora, prompts, strict=True)],
        [sees.clip(c, p) for c, p in zip(base, prompts, strict=True)],
    )


def _n(value: object, fmt: str = ".3f") -> str:
    return "-" if value is None else format(value, fmt)


def format_sees(sees: dict) -> list[str]:
    """The plain-text lines of a report's ``sees``, for under ``cameo eval``'s table."""
    lines = [
        f"sharpness (mean |Laplacian| on {sees['clips']} subject clips): LoRA "
        f"{_n(sees['sharpness_lora'], '.2f')}, base {_n(sees['sharpness_base'], '.2f')}, "
        f"photos {_n(sees['sharpness_photos'], '.2f')}; LoRA / base "
        f"{_n(sees['sharpness_ratio'])}, LoRA / photos {_n(sees['sharpness_of_photos'])} "
        "(other scenes: indicative)"
    ]
    if "speaking_clips" in sees:
        reader = "the eyes' mouth probe" if "speaking_threshold" in sees else "dlib's 68 landmarks"
        line = (
            f"visible speech (mouth range by {reader} on {sees['speaking_clips']} speaking "
            f"clips): LoRA {_n(sees['mouth_range_lora'])}, base {_n(sees['mouth_range_base'])}, "
            f"LoRA / base {_n(sees['mouth_range_ratio'])}"
        )
        if "speaking_threshold" in sees:
            line += (
                f"; over the speaking threshold {sees['speaking_threshold']:.3f}: LoRA "
                f"{_n(sees['speech_visible_lora'], '.2f')}, "
                f"base {_n(sees['speech_visible_base'], '.2f')}"
            )
        else:
            line += " (no speaking threshold for real faces)"
        lines.append(line)
    if "face_lineup" in sees:
        lines.append(
            f"second judge (dlib's face descriptor, line-up of {sees['face_lineup']}): "
            f"identified LoRA {_n(sees['face_identification_lora'], '.2f')}, "
            f"base {_n(sees['face_identification_base'], '.2f')}; face found LoRA "
            f"{_n(sees['face_found_lora'], '.2f')}, base {_n(sees['face_found_base'], '.2f')}"
        )
    elif "face_judge" in sees:
        lines.append(f"second judge (dlib's face descriptor): {sees['face_judge']}")
    return lines
