"""Text-to-video generation with a stock ``WanPipeline`` (the built-in model or any Wan dir)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .media import save_clip_outputs
from .models import load_pipeline, text_tokens_for


@dataclass
class GenerateConfig:
    """Options of ``cameo generate``; saved as JSON beside the clip."""

    prompt: str = field(default="", metadata={"help": "what to show"})
    out: str = field(
        default="clip.mp4",
        metadata={"help": "output MP4 path; a .gif and a .png contact sheet go beside it"},
    )
    base: str = field(
        default="cameo-tiny",
        metadata={"help": "base model: cameo-tiny or a Wan diffusers directory"},
    )
    frames: int = field(default=17, metadata={"help": "number of frames (4k+1)"})
    height: int = field(default=64, metadata={"help": "height in pixels (multiple of 16)"})
    width: int = field(
        default=64, metadata={"help": "width in pixels (multiple of 16); 128 for two people"}
    )
    steps: int = field(default=20, metadata={"help": "sampling steps"})
    guidance: float = field(default=5.0, metadata={"help": "classifier-free guidance scale"})
    seed: int = field(default=0, metadata={"help": "random seed; same seed, same clip"})
    fps: int = field(default=8, metadata={"help": "frames per second of the written video"})
    negative: str = field(default="", metadata={"help": "negative prompt"})
    lora: list[str] = field(
        default_factory=list,
        metadata={"help": "LoRA file, optionally with a scale: mike.safetensors:0.8 (repeatable)"},
    )
    fuse: bool = field(
        default=False, metadata={"help": "merge the LoRAs into the weights (no per-step overhead)"}
    )
    overwrite: bool = field(default=False, metadata={"help": "replace existing output files"})

    def validate(self) -> None:
        if not self.prompt.strip():
            raise ValueError("the prompt is empty")
        if self.frames < 1 or (self.frames - 1) % 4:
            raise ValueError(f"--frames must be 4k+1 (1, 5, 9, 13, 17, ...), not {self.frames}")
        if self.height % 16 or self.width % 16 or self.height < 16 or self.width < 16:
            raise ValueError("--height and --width must be positive multiples of 16")
        if self.steps < 1:
            raise ValueError("--steps must be at least 1")
        for spec in self.lora:
            path, _ = parse_lora_arg(spec)
            if not Path(path).is_file():
                raise ValueError(f"LoRA file {path} does not exist")


def parse_lora_arg(spec: str) -> tuple[str, float]:
    """'mike.safetensors:0.8' -> ('mike.safetensors', 0.8); no scale means 1.0."""
    path, sep, scale = spec.rpartition(":")
    if sep and path:
        try:
            return path, float(scale)
        except ValueError:
            pass
    return spec, 1.0


def apply_loras(
    pipe, specs: list[str], fuse: bool = False, base_dir: Path | None = None
) -> list[str]:
    """Load LoRA files into ``pipe`` (stock diffusers loader), set their scales, optionally fuse.
    Returns the adapter names."""
    from .lora import check_compatible

    names, weights = [], []
    for i, spec in enumerate(specs):
        path, scale = parse_lora_arg(spec)
        check_compatible(pipe.transformer, Path(path), base_dir)  # never a silent no-op
        name = f"lora{i}_{Path(path).stem}".replace(".", "_").replace("-", "_")
        pipe.load_lora_weights(path, adapter_name=name)
        names.append(name)
        weights.append(scale)
    if names:
        pipe.set_adapters(names, weights)
        if fuse:
            pipe.fuse_lora(components=["transformer"], adapter_names=names, lora_scale=1.0)
            pipe.unload_lora_weights()  # the change now lives in the weights
    return names


def generate_frames(pipe, cfg: GenerateConfig) -> np.ndarray:
    """Run the pipeline; returns uint8 frames (F, H, W, 3)."""
    gen = torch.Generator("cpu").manual_seed(cfg.seed)
    with torch.no_grad():
        video = pipe(
            prompt=cfg.prompt,
            negative_prompt=cfg.negative,
            height=cfg.height,
            width=cfg.width,
            num_frames=cfg.frames,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance,
            generator=gen,
            max_sequence_length=text_tokens_for(pipe),
            output_type="np",
        ).frames[0]
    return (np.clip(video, 0, 1) * 255 + 0.5).astype(np.uint8)


def generate_to_files(cfg: GenerateConfig, pipe=None) -> list[Path]:
    """Generate and write the MP4, GIF, PNG contact sheet and a JSON of the settings."""
    out = Path(cfg.out)
    if pipe is None:
        from .models import resolve_base

        pipe = load_pipeline(cfg.base)
        apply_loras(pipe, cfg.lora, cfg.fuse, resolve_base(cfg.base))
    frames = generate_frames(pipe, cfg)
    return save_clip_outputs(frames, out, fps=cfg.fps, overwrite=cfg.overwrite, meta=asdict(cfg))
