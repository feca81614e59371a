"""What a base model wants for LoRA training, read from its own config files.

A profile per base family (the built-in cameo-tiny; Wan 2.1 text-to-video 1.3B and 14B; Wan
2.2 A14B with its two experts; Wan 2.2 TI2V-5B; the image-to-video models) gives the training
resolution, clip length, learning rate, batch, precision, gradient checkpointing and the flow
shift of the base's own scheduler. ``cameo train --base DIR`` starts from it; every flag wins.

The Wan numbers follow the models' own release settings (480x832 at 16 fps, 81-frame clips,
flow shift 3.0 for 480p in Wan 2.1's scheduler config; Wan 2.2 A14B's expert boundary at
t = 875 for text-to-video, 900 for image-to-video) and the LoRA recipes the field's trainers
publish for them (musubi-tuner, diffusion-pipe, ai-toolkit: learning rate 1e-4 to 2e-4,
batch 1, bf16, gradient checkpointing). Training clips are shorter than generation clips
(33 frames, about 2 s): a person's likeness lives in faces, not in long motion, and 33 frames
at 480x832 is what a 24 GB card holds with the frozen 14B in fp8 (docs/ecosystem.md).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

TINY = "cameo-tiny"
TINY_I2V = "cameo-tiny-i2v"


@dataclass(frozen=True)
class BaseProfile:
    """Training defaults for one base family (see the module docstring for their sources)."""

    family: str  # e.g. "wan2.1-t2v-1.3b"
    task: str  # "t2v", "i2v" or "ti2v"
    height: int  # training resolution: the area of the aspect-ratio buckets
    width: int
    frames: int  # frames of a training clip (4k + 1); photos are 1
    fps: int  # frame rate clips are sampled at
    lr: float
    batch: int
    mixed_precision: str  # on a GPU; CPUs train in fp32 ("no")
    grad_checkpointing: bool
    flow_shift: float  # the base scheduler's own
    experts: int  # 2 for Wan 2.2 A14B
    boundary_ratio: float | None  # where the high-noise expert hands over (A14B)
    sample_frames: int = 81  # frames a generated clip has by default (Wan: 5 s at 16 fps)

    @property
    def builtin(self) -> bool:
        """One of cameo's own models of the built-in world (cameo-tiny, cameo-tiny-i2v)."""
        return self.family in (TINY, TINY_I2V)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def detect_profile(base_dir: Path | str) -> BaseProfile:
    """The profile of a diffusers Wan directory, from ``model_index.json``, the transformer's
    ``config.json``, the VAE's and the scheduler's. Unknown shapes get the nearest family's
    settings with ``family`` saying so (``wan-<hidden>-<layers>l``)."""
    base = Path(base_dir)
    index = _read(base / "model_index.json")
    tcfg = _read(base / "transformer" / "config.json")
    vcfg = _read(base / "vae" / "config.json")
    scfg = _read(base / "scheduler" / "scheduler_config.json")
    shift = float(scfg.get("flow_shift", scfg.get("shift", 3.0)) or 3.0)
    image_pipeline = "ImageToVideo" in str(index.get("_class_name", ""))
    two = "transformer_2" in index and index.get("transformer_2", [None])[0] is not None
    boundary = index.get("boundary_ratio")
    if index.get("text_encoder", [None, None])[1] == "BertModel" or base.name == TINY:
        tiny = _tiny(shift, image_pipeline)  # cameo's own models speak MiniLM, not UMT5
        if two:  # a two-expert layout of cameo's own parts (tests build them)
            tiny = replace(tiny, experts=2, boundary_ratio=float(boundary))
        return tiny
    heads, dim = tcfg.get("num_attention_heads", 12), tcfg.get("attention_head_dim", 128)
    hidden, layers = heads * dim, tcfg.get("num_layers", 30)
    in_channels, z_dim = tcfg.get("in_channels", 16), vcfg.get("z_dim", 16)
    task = "i2v" if image_pipeline or in_channels > z_dim + 4 else "t2v"
    if z_dim == 48 and index.get("expand_timesteps"):
        task = "ti2v"  # Wan 2.2 TI2V-5B: one model, text or text + first frame
    size = {1536: "1.3b", 3072: "5b", 5120: "14b"}.get(hidden, f"{hidden}-{layers}l")
    family = f"wan{'2.2' if two or z_dim == 48 else '2.1'}-{task}-{'a14b' if two else size}"
    large = hidden >= 5120
    return BaseProfile(
        family=family,
        task=task,
        height=704 if task == "ti2v" else 480,  # TI2V-5B is a 720p model (704x1280)
        width=1280 if task == "ti2v" else 832,
        frames=33,
        fps=24 if task == "ti2v" else 16,
        lr=1e-4 if large or two else 2e-4,
        batch=1,
        mixed_precision="bf16",
        grad_checkpointing=True,
        flow_shift=shift,
        experts=2 if two else 1,
        boundary_ratio=float(boundary) if boundary is not None else None,
        sample_frames=121 if task == "ti2v" else 81,  # TI2V-5B: 5 s at 24 fps
    )


def _tiny(shift: float, image_to_video: bool = False) -> BaseProfile:
    """cameo-tiny (and cameo-tiny-i2v): 64x64, 17 frames at 8 fps, trained in fp32 on a CPU in
    about a minute (lr and batch measured on the built-in world, docs/quality.md)."""
    return BaseProfile(
        family=TINY_I2V if image_to_video else TINY,
        task="i2v" if image_to_video else "t2v",
        height=64,
        width=64,
        frames=17,
        fps=8,
        lr=2e-3,
        batch=8,
        mixed_precision="no",
        grad_checkpointing=False,
        flow_shift=shift,
        experts=1,
        boundary_ratio=None,
        sample_frames=17,
    )
