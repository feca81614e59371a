"""Reading clips with cameo's eyes, and the ``cameo eval`` reports built on that.

A clip is read frame by frame: identity embeddings, probe outputs. Two-person clips (wider than
tall) are read per region: the left and right halves, each holding one person.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from PIL import Image
from safetensors import safe_open

from ..data.media import save_clip_outputs
from ..generation import GenerateConfig, apply_loras, generate_frames
from ..models import load_pipeline, resolve_base
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
VIDEO_EXT = {".mp4", ".gif", ".webm", ".mov"}
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
        """``encoder_dir``: a local transformers vision model to use as identity encoder (for real
        photos); cameo's own world encoder otherwise. The attribute probes are always cameo's."""
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
            rng = random.Random("cameo-eval/distractors")
            cents = []
            for k in range(N_DISTRACTORS):
                pix = np.stack([random_still("heldout", 100_000 + k, rng)[0] for _ in range(5)])
                cents.append(centroid(self.embed(pix)))
            self._distractors = torch.stack(cents)
        return self._distractors


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


def load_frames(path: Path) -> np.ndarray:
    """A clip (mp4/gif/webm) or an image as uint8 (F, H, W, 3)."""
    if path.suffix.lower() in IMAGE_EXT:
        return np.asarray(Image.open(path).convert("RGB"))[None]
    arr = iio.imread(path, index=None)
    if arr.ndim == 3:
        arr = arr[None]
    return arr[..., :3]


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


def prompt_for(path: Path) -> str:
    """A clip's prompt: a same-name .txt, or the 'prompt'/'caption' of a same-name .json."""
    txt, js = path.with_suffix(".txt"), path.with_suffix(".json")
    if txt.is_file():
        return txt.read_text(errors="replace").strip()
    if js.is_file():
        try:
            meta = json.loads(js.read_text())
            return str(meta.get("prompt") or meta.get("caption") or "")
        except json.JSONDecodeError:
            return ""
    return ""


def eval_clip_folder(eyes: Eyes, clips_dir: Path, photos: Path | None) -> dict:
    """Score every clip in a folder (made by cameo or elsewhere) against optional references."""
    files = sorted(p for p in Path(clips_dir).iterdir() if p.suffix.lower() in VIDEO_EXT)
    if not files:
        raise FileNotFoundError(f"no clips (mp4/gif/webm) in {clips_dir}")
    refs, self_sim = None, None
    if photos is not None:
        refs = eyes.embed(load_references(photos))
        self_sim = self_similarity(refs)
    # The same clip is often written as both .mp4 and .gif: score each stem once.
    seen, results = set(), []
    for f in files:
        if f.stem in seen:
            continue
        seen.add(f.stem)
        rec = score_clip(eyes, load_frames(f), prompt_for(f), refs, self_sim)
        rec["file"] = f.name
        results.append(rec)
    return {"reference_self_similarity": self_sim, "summary": summarise(results), "clips": results}


def format_table(report: dict) -> str:
    """A plain-text table of a report's per-clip metrics and its summary."""
    rows = [("clip", "region", "identity", "ident.", "fidelity", "temporal")]
    for c in report["clips"]:
        for p in c["people"]:
            rows.append(
                (
                    str(c.get("file", c["prompt"][:40])),
                    p["region"],
                    f"{p['identity_normalised']:.3f}" if "identity_normalised" in p else "-",
                    ("yes" if p["identified"] else "no") if "identified" in p else "-",
                    f"{p['prompt_fidelity']:.2f}" if p["prompt_fidelity"] is not None else "-",
                    f"{p['temporal_consistency']:.3f}",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    s = report["summary"]
    lines.append(
        "summary: "
        + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items())
    )
    return "\n".join(lines)


# ------------------------------------------------------------------------- LoRA evaluation


def default_prompts(trigger: str) -> dict[str, list[str]]:
    """Prompts that name the subject (identity, fidelity) and prompts that do not (leakage),
    with scenes that a typical photo folder lacks."""
    return {
        "subject": [
            f"{trigger}, speaking, in front of a blue wall",
            f"{trigger}, silent, smiling, in a room with green walls",
            f"a video of {trigger}, talking, against an orange background",
            f"{trigger} in a red cap, quiet, on a purple backdrop",
        ],
        "others": [
            "a man with short black hair, speaking, in front of a grey wall",
            "a woman with long blonde hair, silent, against a teal background",
            "Ada Lovette, talking, in front of a white wall",
            "a person with curly red hair and round glasses, speaking, on a yellow backdrop",
        ],
    }


def read_lora_trigger(path: Path) -> str | None:
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    return meta.get("cameo.trigger")


def eval_lora(
    eyes: Eyes,
    lora: Path,
    photos: Path,
    *,
    base: str | None = None,
    trigger: str | None = None,
    prompts: dict[str, list[str]] | None = None,
    seeds: int = 2,
    scale: float = 1.0,
    save_clips: Path | None = None,
) -> dict:
    """Generate every prompt x seed with the LoRA and with the base model, and score both:
    identity and fidelity on prompts naming the subject, leakage on prompts that do not."""
    trigger = trigger or read_lora_trigger(lora)
    if not trigger:
        raise ValueError("the LoRA file names no trigger word; pass --trigger")
    prompts = prompts or default_prompts(trigger)
    refs = eyes.embed(load_references(photos))
    self_sim = self_similarity(refs)

    pipe = load_pipeline(base)
    apply_loras(pipe, [f"{lora}:{scale}"], base_dir=resolve_base(base))
    results: dict[str, dict[str, list]] = {}
    for group, plist in prompts.items():
        for variant in ("lora", "base"):
            (pipe.enable_lora if variant == "lora" else pipe.disable_lora)()
            recs = []
            for pi, prompt in enumerate(plist):
                for seed in range(seeds):
                    wide = "two people" in prompt
                    cfg = GenerateConfig(prompt=prompt, seed=seed, width=128 if wide else 64)
                    frames = generate_frames(pipe, cfg)
                    rec = score_clip(eyes, frames, prompt, refs, self_sim)
                    rec["seed"] = seed
                    recs.append(rec)
                    if save_clips is not None:
                        save_clip_outputs(
                            frames,
                            save_clips / f"{group}-{variant}-{pi:02d}-s{seed}.mp4",
                            overwrite=True,
                            meta={"prompt": prompt},
                        )
            results.setdefault(group, {})[variant] = recs
    pipe.enable_lora()
    summary = {g: {v: summarise(r) for v, r in d.items()} for g, d in results.items()}
    if "others" in summary:
        lo, ba = (
            summary["others"]["lora"].get("identity"),
            summary["others"]["base"].get("identity"),
        )
        if lo is not None and ba is not None:
            summary["leakage"] = lo - ba
    return {
        "lora": str(lora),
        "trigger": trigger,
        "scale": scale,
        "seeds": seeds,
        "reference_self_similarity": self_sim,
        "summary": summary,
        "clips": results,
    }


def format_lora_table(report: dict) -> str:
    rows = [("prompts", "model", "identity (norm.)", "identified", "prompt fidelity")]
    for group, d in report["summary"].items():
        if not isinstance(d, dict):
            continue
        for variant, s in d.items():
            rows.append(
                (
                    group,
                    variant,
                    f"{s.get('identity_normalised', float('nan')):.3f}",
                    f"{s.get('identification_rate', float('nan')):.2f}",
                    f"{s.get('prompt_fidelity', float('nan')):.2f}",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    if "leakage" in report["summary"]:
        lines.append(
            f"leakage (identity on prompts not naming {report['trigger']}, LoRA - base): {report['summary']['leakage']:+.3f}"
        )
    return "\n".join(lines)
