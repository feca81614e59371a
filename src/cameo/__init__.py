"""cameo: clone a person into a text-to-video diffusion model with LoRA, and measure it.

The Python API mirrors the command line::

    import cameo
    lora = cameo.train("photos/", trigger="mike", out="runs/mike")
    frames = cameo.generate("mike, speaking, in front of a blue wall", lora=[f"{lora}:0.8"])
    cameo.convert(lora, "mike-comfy.safetensors", to="comfyui")
    report = cameo.evaluate(lora=lora, photos="photos/")
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .data.media import save_clip_outputs
from .generation import GenerateConfig, generate_clip
from .lora_files import convert_file
from .metrics.evaluate import eval_clip_folder, eval_lora
from .training import TrainConfig, run_training

__version__ = "0.1.0"
__all__ = ["convert", "evaluate", "generate", "train"]


def train(data: str | Path, trigger: str, *, resume: bool = False, **options: Any) -> Path:
    """Train a LoRA on a folder of captioned photos; returns the LoRA file's path.

    ``options`` are the fields of :class:`cameo.training.TrainConfig` (``name``, ``out``,
    ``steps``, ``lr``, ``base``, ...) and of its LoRA spec (``rank``, ``alpha``, ``targets``,
    ``ffn``, ``rslora``), with the same defaults as ``cameo train``.
    """
    cfg = TrainConfig.from_options(data=str(data), trigger=trigger, **options)
    return run_training(cfg, resume=resume)


def generate(
    prompt: str, *, out: str | Path | None = None, pipe=None, **options: Any
) -> np.ndarray:
    """Generate a clip; returns uint8 frames (F, H, W, 3). With ``out``, also writes the MP4,
    GIF, PNG contact sheet and JSON beside it. ``options`` are the fields of
    :class:`cameo.generation.GenerateConfig` (``lora=["mike.safetensors:0.8"]``, ``seed``, ...).
    A ``pipe`` you pass (from ``cameo.models.load_pipeline``) is reused; the LoRAs are applied
    to it for this clip only."""
    cfg = GenerateConfig(prompt=prompt, **options).resolved()
    frames = generate_clip(cfg, pipe)
    if out is not None:
        save_clip_outputs(frames, Path(out), fps=cfg.fps, overwrite=cfg.overwrite, meta=asdict(cfg))
    return frames


def convert(src: str | Path, dst: str | Path, to: str, overwrite: bool = False):
    """Convert a Wan LoRA file between ``diffusers``, ``comfyui`` and ``kohya`` key formats;
    returns the coverage report (raises if any key would be dropped)."""
    return convert_file(Path(src), Path(dst), to, overwrite=overwrite)


def evaluate(
    *,
    photos: str | Path | None = None,
    lora: str | Path | None = None,
    clips: str | Path | None = None,
    identity: str = "auto",
    **options: Any,
) -> dict:
    """Measure identity, prompt fidelity and leakage: of a LoRA (generating with it and with the
    base model) or of a folder of clips. Returns the report ``cameo eval`` writes as JSON.

    ``identity``: ``world`` (cameo's eyes, for cameo-tiny's world), ``face`` (the face
    descriptor, for real faces; the faces extra) or ``auto``, as ``cameo eval --identity``;
    the report's ``identity_judge`` says which judged."""
    if (lora is None) == (clips is None):
        raise ValueError("give exactly one of lora= or clips=")
    if clips is not None:
        return eval_clip_folder(
            None, Path(clips), Path(photos) if photos else None, identity=identity
        )
    if photos is None:
        raise ValueError("evaluating a LoRA needs photos=, the subject's reference photos")
    return eval_lora(None, Path(lora), Path(photos), identity=identity, **options)
