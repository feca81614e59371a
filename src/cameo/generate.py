"""Text-to-video generation with a stock ``WanPipeline`` (the built-in model or any Wan dir)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import fast
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
    fast: bool = field(
        default=True,
        metadata={"help": "fast path (cameo.fast); --no-fast runs the plain diffusers forward"},
    )
    mix: str = field(
        default="linear",
        metadata={
            "help": "how several LoRAs combine: linear, cat, svd, ties, dare_linear, regional"
        },
    )
    region: list[str] = field(
        default_factory=list,
        metadata={
            "help": "with --mix regional: TRIGGER=left|right|top|bottom or TRIGGER=x0,y0,x1,y1 (repeatable)"
        },
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
        from .compose import MERGES

        if self.mix not in (*MERGES, "regional"):
            raise ValueError(
                f"--mix must be one of {', '.join((*MERGES, 'regional'))}, not {self.mix!r}"
            )
        for r in self.region:
            parse_region(r)


def parse_region(spec: str) -> tuple[str, str | tuple[float, float, float, float]]:
    """'mike=left' -> ('mike', 'left'); 'anna=0.5,0,1,1' -> ('anna', (0.5, 0.0, 1.0, 1.0))."""
    name, sep, where = spec.partition("=")
    if not sep or not name:
        raise ValueError(
            f"--region {spec!r}: expected TRIGGER=left|right|top|bottom or TRIGGER=x0,y0,x1,y1"
        )
    if where in ("left", "right", "top", "bottom", "all"):
        return name, where
    try:
        box = tuple(float(v) for v in where.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise ValueError(
            f"--region {spec!r}: a box is x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"
        )
    return name, box  # type: ignore[return-value]


def parse_lora_arg(spec: str) -> tuple[str, float]:
    """'mike.safetensors:0.8' -> ('mike.safetensors', 0.8); no scale means 1.0."""
    path, sep, scale = spec.rpartition(":")
    if sep and path:
        try:
            return path, float(scale)
        except ValueError:
            pass
    return spec, 1.0


@dataclass
class LoadedLoras:
    """Adapters loaded into a pipeline; for regional mixing, each one's trigger and region."""

    names: list[str] = field(default_factory=list)
    regional: dict[str, tuple[str, object]] | None = None


def apply_loras(
    pipe,
    specs: list[str],
    fuse: bool = False,
    base_dir: Path | None = None,
    mix: str = "linear",
    regions: list[str] | None = None,
) -> LoadedLoras:
    """Load LoRA files into ``pipe`` with the stock diffusers loader and combine them by ``mix``:
    ``linear`` (adapter weights), a merge into one adapter (``cat``, ``svd``, ``ties``,
    ``dare_linear``), or ``regional`` (each acts on its own region; see ``cameo.compose``)."""
    from .compose import MERGES, check_slots
    from .lora import check_compatible, read_metadata

    paths = [parse_lora_arg(s) for s in specs]
    metas = [read_metadata(Path(p)) for p, _ in paths]
    for (path, _), meta in zip(paths, metas, strict=True):
        check_compatible(_expert_of(pipe, meta), Path(path), base_dir)  # never a silent no-op
    if mix != "linear" and mix != "regional" and any(m.get("cameo.expert") == "low" for m in metas):
        raise ValueError(
            "merging is for LoRAs of one transformer; mix Wan 2.2 experts with --mix linear"
        )
    if mix == "linear":
        check_slots(metas)
    if mix in MERGES and mix != "linear" and len(paths) > 1:
        paths = [(_merged_file(paths, mix), 1.0)]
    loaded = LoadedLoras()
    for i, (path, _) in enumerate(paths):
        name = f"lora{i}_{Path(path).stem}".replace(".", "_").replace("-", "_")
        low = len(paths) == len(metas) and metas[i].get("cameo.expert") == "low"
        pipe.load_lora_weights(
            str(path), adapter_name=name, **({"load_into_transformer_2": True} if low else {})
        )
        loaded.names.append(name)
    if not loaded.names:
        return loaded
    pipe.set_adapters(loaded.names, [w for _, w in paths])
    if mix == "regional":
        loaded.regional = _regions(loaded.names, metas, regions or [])
    elif fuse:
        pipe.fuse_lora(components=["transformer"], adapter_names=loaded.names, lora_scale=1.0)
        pipe.unload_lora_weights()  # the change now lives in the weights
    return loaded


def _expert_of(pipe, meta: dict):
    """The transformer a LoRA file belongs to (Wan 2.2's low-noise expert or the main one)."""
    if meta.get("cameo.expert") == "low":
        if getattr(pipe, "transformer_2", None) is None:
            raise ValueError(
                "this LoRA adapts the low-noise expert of a Wan 2.2 A14B base; this base has none"
            )
        return pipe.transformer_2
    return pipe.transformer


def _merged_file(paths: list[tuple[str, float]], method: str) -> Path:
    import tempfile

    from .compose import load_modules, merge, save_modules

    mods = [load_modules(Path(p))[0] for p, _ in paths]
    merged = merge(mods, [w for _, w in paths], method)
    out = Path(tempfile.mkdtemp(prefix="cameo-merge-")) / f"merged-{method}.safetensors"
    return save_modules(out, merged, {"cameo.merge": method})


def _regions(
    names: list[str], metas: list[dict], specs: list[str]
) -> dict[str, tuple[str, object]]:
    given = dict(parse_region(s) for s in specs)
    defaults = ["left", "right", "top", "bottom"]
    out = {}
    for i, (name, meta) in enumerate(zip(names, metas, strict=True)):
        trigger = meta.get("cameo.trigger", "")
        out[name] = (trigger, given.get(trigger, defaults[i % len(defaults)]))
    return out


def _regional_masks(pipe, cfg: GenerateConfig, loaded: LoadedLoras) -> dict:
    from .compose import region_token_mask, trigger_token_mask

    p_t, p_h, p_w = pipe.transformer.config.patch_size
    scale = pipe.vae_scale_factor_spatial
    frames = ((cfg.frames - 1) // pipe.vae_scale_factor_temporal + 1) // p_t
    h, w = cfg.height // scale // p_h, cfg.width // scale // p_w
    length = text_tokens_for(pipe)
    return {
        name: (
            region_token_mask(region, frames, h, w),
            trigger_token_mask(pipe.tokenizer, cfg.prompt, trigger, length)
            if trigger
            else torch.zeros(length),
        )
        for name, (trigger, region) in (loaded.regional or {}).items()
    }


def generate_frames(pipe, cfg: GenerateConfig, loaded: LoadedLoras | None = None) -> np.ndarray:
    """Run the pipeline; returns uint8 frames (F, H, W, 3)."""
    import contextlib

    from .compose import regional

    gen = torch.Generator("cpu").manual_seed(cfg.seed)
    masks = _regional_masks(pipe, cfg, loaded) if loaded is not None and loaded.regional else None
    ctx = regional(pipe.transformer, masks) if masks else contextlib.nullcontext()
    speed = fast.pipeline(pipe) if cfg.fast and not masks else contextlib.nullcontext()
    with torch.no_grad(), ctx, speed:
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
        loaded = apply_loras(pipe, cfg.lora, cfg.fuse, resolve_base(cfg.base), cfg.mix, cfg.region)
    else:
        loaded = None
    frames = generate_frames(pipe, cfg, loaded)
    return save_clip_outputs(frames, out, fps=cfg.fps, overwrite=cfg.overwrite, meta=asdict(cfg))
