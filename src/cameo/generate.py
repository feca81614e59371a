"""Text-to-video generation with a stock ``WanPipeline`` (the built-in model or any Wan dir)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from . import fast
from .media import save_clip_outputs
from .models import encode_prompts, load_pipeline, text_tokens_for
from .world.captions import split_pair_caption


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
    sampler: str = field(
        default="base",
        metadata={
            "help": "flow-matching sampler: base (the one the model ships; cameo-tiny: euler), "
            "euler, unipc (Wan's), dpm++"
        },
    )
    shift: float = field(
        default=0.0,
        metadata={
            "help": "sampling sigma shift (larger: more steps spent at high noise); 0 keeps the "
            "base's scheduler's own (cameo-tiny: 2; Wan's 480p checkpoints: 3)"
        },
    )
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
            "help": "how several LoRAs combine: linear, cat, svd, ties, dare_linear, regional, "
            "windows (each person denoised in a window of their own, reading their side of an "
            "'on the left ... on the right ...' prompt unless given --region-prompt)"
        },
    )
    region: list[str] = field(
        default_factory=list,
        metadata={
            "help": "with --mix regional or windows: TRIGGER=left|right|top|bottom or "
            "TRIGGER=x0,y0,x1,y1 (repeatable)"
        },
    )
    region_prompt: list[str] = field(
        default_factory=list,
        metadata={
            "help": "WHERE=PROMPT: the video tokens of a region (left, right, top, bottom or "
            "x0,y0,x1,y1) read this prompt instead of the main one (repeatable); 'auto' takes "
            "left and right from a prompt that says 'on the left ... on the right ...'"
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
        if self.sampler not in SAMPLERS:
            raise ValueError(
                f"--sampler must be one of {', '.join(SAMPLERS)}, not {self.sampler!r}"
            )
        if self.shift < 0:
            raise ValueError(f"--shift must be positive, or 0 for the base's own; not {self.shift}")
        for spec in self.lora:
            path, _ = parse_lora_arg(spec)
            if not Path(path).is_file():
                raise ValueError(f"LoRA file {path} does not exist")
        from .compose import MIXES

        if self.mix not in MIXES:
            raise ValueError(f"--mix must be one of {', '.join(MIXES)}, not {self.mix!r}")
        for r in self.region:
            parse_region(r)
        region_prompts(self)  # raises on a bad WHERE=PROMPT, or 'auto' without left/right


def parse_region(spec: str) -> tuple[str, str | tuple[float, float, float, float]]:
    """'mike=left' -> ('mike', 'left'); 'anna=0.5,0,1,1' -> ('anna', (0.5, 0.0, 1.0, 1.0))."""
    name, sep, where = spec.partition("=")
    if not sep or not name:
        raise ValueError(
            f"--region {spec!r}: expected TRIGGER=left|right|top|bottom or TRIGGER=x0,y0,x1,y1"
        )
    return name, _parse_where(where, f"--region {spec!r}")


def parse_region_prompt(spec: str) -> tuple[str | tuple[float, float, float, float], str]:
    """'left=mike, speaking' -> ('left', 'mike, speaking'); a box works as in ``parse_region``."""
    where, sep, prompt = spec.partition("=")
    if not sep or not prompt.strip():
        raise ValueError(
            f"--region-prompt {spec!r}: expected WHERE=PROMPT, WHERE left|right|top|bottom or x0,y0,x1,y1"
        )
    return _parse_where(where.strip(), f"--region-prompt {spec!r}"), prompt.strip()


def region_prompts(cfg: GenerateConfig) -> list[str]:
    """The WHERE=PROMPT list to use: ``cfg.region_prompt`` as given, with 'auto' replaced by
    the left and right prompts that ``auto_region_prompts`` reads from the main prompt. With
    ``--mix windows`` and none given, 'auto' where the prompt names both sides: a window holds
    one person, so it should read that person's words, not the whole two-person prompt."""
    if not cfg.region_prompt and cfg.mix == "windows":
        return auto_region_prompts(cfg.prompt) or []
    out = []
    for spec in cfg.region_prompt:
        if spec.strip() == "auto":
            found = auto_region_prompts(cfg.prompt)
            if found is None:
                raise ValueError(
                    "--region-prompt auto needs a prompt that says 'on the left ... on the "
                    f"right ...'; {cfg.prompt!r} does not"
                )
            out += found
        else:
            parse_region_prompt(spec)
            out.append(spec)
    return out


def auto_region_prompts(prompt: str) -> list[str] | None:
    """'two people in front of a red wall: on the left mike speaking, on the right anna silent'
    -> ['left=mike speaking, in front of a red wall', 'right=anna silent, in front of a red
    wall']: each side's words plus the shared scene (``world.captions.split_pair_caption``),
    since a region holds one person. None when the prompt does not name both sides."""
    parts = split_pair_caption(prompt)
    if parts is None:
        return None
    left, right, scene = parts
    return [
        f"{side}={words}, {scene}" if scene else f"{side}={words}"
        for side, words in (("left", left), ("right", right))
    ]


def _parse_where(where: str, what: str) -> str | tuple[float, float, float, float]:
    if where in ("left", "right", "top", "bottom", "all"):
        return where
    try:
        box = tuple(float(v) for v in where.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise ValueError(
            f"{what}: a region is left|right|top|bottom, or a box x0,y0,x1,y1 with "
            "0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1"
        )
    return box  # type: ignore[return-value]


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
    windows: bool = False  # --mix windows: each region is denoised as a window of its own


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
    ``dare_linear``), ``regional`` (each acts on its own region) or ``windows`` (each draws its
    region as a window of its own); see ``cameo.compose``."""
    from .compose import MERGES, check_slots
    from .lora import check_compatible, read_metadata

    paths = [parse_lora_arg(s) for s in specs]
    metas = [read_metadata(Path(p)) for p, _ in paths]
    for (path, _), meta in zip(paths, metas, strict=True):
        check_compatible(_expert_of(pipe, meta), Path(path), base_dir)  # never a silent no-op
    if mix not in ("linear", "regional") and any(m.get("cameo.expert") == "low" for m in metas):
        raise ValueError(
            f"--mix {mix} is for LoRAs of one transformer; mix Wan 2.2 experts with --mix linear"
        )
    if mix == "windows" and getattr(pipe, "transformer_2", None) is not None:
        raise ValueError(
            "--mix windows is for one-transformer bases, not Wan 2.2 A14B's two experts"
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
    if mix in ("regional", "windows"):
        loaded.regional = _regions(loaded.names, metas, regions or [])
        loaded.windows = mix == "windows"
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


def _token_grid(pipe, cfg: GenerateConfig) -> tuple[int, int, int]:
    """Video tokens of a clip: (frames, rows, columns) after the VAE and the patching."""
    p_t, p_h, p_w = pipe.transformer.config.patch_size
    scale = pipe.vae_scale_factor_spatial
    frames = ((cfg.frames - 1) // pipe.vae_scale_factor_temporal + 1) // p_t
    return frames, cfg.height // scale // p_h, cfg.width // scale // p_w


def _prompts(cfg: GenerateConfig) -> list[str]:
    """The main prompt, then one per --region-prompt (the text the transformer reads, in order)."""
    return [cfg.prompt, *(parse_region_prompt(r)[1] for r in region_prompts(cfg))]


def _regional_masks(pipe, cfg: GenerateConfig, loaded: LoadedLoras) -> dict:
    """Per adapter: its region's video-token mask, and the positions of its trigger in the text
    (in the main prompt and in every region prompt)."""
    from .compose import region_token_mask, trigger_token_mask

    grid, length = _token_grid(pipe, cfg), text_tokens_for(pipe)

    def text_mask(trigger: str) -> torch.Tensor:
        if not trigger:
            return torch.zeros(length * len(_prompts(cfg)))
        return torch.cat(
            [trigger_token_mask(pipe.tokenizer, p, trigger, length) for p in _prompts(cfg)]
        )

    return {
        name: (region_token_mask(region, *grid), text_mask(trigger))
        for name, (trigger, region) in (loaded.regional or {}).items()
    }


def _prompt_inputs(pipe, cfg: GenerateConfig) -> tuple[dict, torch.Tensor | None]:
    """What the pipeline is called with for the text, and the cross-attention mask of region
    prompts (None without them). With region prompts, the text is the main prompt followed by
    each region's, (1, (1+R)·T, D); the negative prompt is repeated to the same length."""
    specs = region_prompts(cfg)
    if not specs:
        return {"prompt": cfg.prompt, "negative_prompt": cfg.negative}, None
    from .compose import region_token_mask, regional_text_mask

    grid, length = _token_grid(pipe, cfg), text_tokens_for(pipe)
    regions = [region_token_mask(parse_region_prompt(r)[0], *grid) for r in specs]
    return _stacked_text(pipe, cfg), regional_text_mask(regions, length)


def _stacked_text(pipe, cfg: GenerateConfig) -> dict:
    """The main prompt followed by each region prompt, (1, (1+R)·T, D), and the negative prompt
    repeated to the same length, as the pipeline's ``prompt_embeds`` arguments."""
    prompts = _prompts(cfg)
    text = encode_prompts(pipe, prompts).reshape(1, len(prompts) * text_tokens_for(pipe), -1)
    negative = encode_prompts(pipe, [cfg.negative]).repeat(1, len(prompts), 1)
    return {"prompt_embeds": text, "negative_prompt_embeds": negative}


def _windows(pipe, cfg: GenerateConfig, loaded: LoadedLoras) -> list:
    """Per adapter, the window of its region in latent pixels, reading the region prompt of the
    same region when there is one (else the main prompt)."""
    from .compose import Window, region_box, region_span

    _, p_h, p_w = pipe.transformer.config.patch_size
    _, rows, cols = _token_grid(pipe, cfg)
    wheres = [parse_region_prompt(r)[0] for r in region_prompts(cfg)]
    out = []
    for name, (_trigger, region) in (loaded.regional or {}).items():
        x0, y0, x1, y1 = region_box(region)
        prompt = wheres.index(region) + 1 if region in wheres else 0
        out.append(
            Window(name, region_span(y0, y1, rows, p_h), region_span(x0, x1, cols, p_w), prompt)
        )
    return out


def initial_noise(pipe, cfg: GenerateConfig) -> torch.Tensor:
    """The noise the pipeline starts from for ``cfg``'s size and seed, (1, C, F', H/s, W/s):
    given back to ``generate_frames`` as ``noise`` it gives the same clip; a crop of a wider
    clip's noise gives a narrower clip that starts from the same numbers (paired comparisons)."""
    model = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
    return pipe.prepare_latents(
        1,
        model.config.in_channels,
        cfg.height,
        cfg.width,
        cfg.frames,
        torch.float32,
        pipe._execution_device,
        torch.Generator("cpu").manual_seed(cfg.seed),
    )


SAMPLERS = ("base", "euler", "unipc", "dpm++")


def sampling_scheduler(own, sampler: str = "base", shift: float = 0.0):
    """The scheduler to sample with: ``own`` (the base's) unless another ``sampler`` or a sigma
    ``shift`` is asked for (0: the base's own shift). Every choice is a flow-matching sampler
    with that shift, each spacing its steps its own way: ``euler`` (FlowMatchEulerDiscrete,
    cameo-tiny's), ``unipc`` (UniPC, which Wan's checkpoints ship) or ``dpm++`` (DPM-Solver++
    multistep). The first calls the shift ``shift``, the other two ``flow_shift``."""
    from diffusers import (
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
        UniPCMultistepScheduler,
    )

    key = next((k for k in ("flow_shift", "shift") if k in own.config), None)
    if key is None:
        raise ValueError(f"the base's {type(own).__name__} is not a flow-matching scheduler")
    shift = shift or own.config[key]
    cls = {
        "base": type(own),
        "euler": FlowMatchEulerDiscreteScheduler,
        "unipc": UniPCMultistepScheduler,
        "dpm++": DPMSolverMultistepScheduler,
    }[sampler]
    if cls is type(own):  # keep the base's other settings (solver order, ...)
        return own if own.config[key] == shift else cls.from_config(own.config, **{key: shift})
    steps = own.config.num_train_timesteps
    if cls is FlowMatchEulerDiscreteScheduler:
        return cls(num_train_timesteps=steps, shift=shift)
    return cls(
        num_train_timesteps=steps,
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        flow_shift=shift,
    )


@contextlib.contextmanager
def swapped_scheduler(pipe, scheduler):
    """``pipe`` samples with ``scheduler`` inside the block, and with its own again after it."""
    own = pipe.scheduler
    pipe.scheduler = scheduler
    try:
        yield
    finally:
        pipe.scheduler = own


def generate_frames(
    pipe,
    cfg: GenerateConfig,
    loaded: LoadedLoras | None = None,
    noise: torch.Tensor | None = None,
) -> np.ndarray:
    """Run the pipeline; returns uint8 frames (F, H, W, 3). ``noise``: the starting latents
    (1, C, F', H/s, W/s), instead of those drawn from ``cfg.seed``."""
    from .compose import regional, regional_prompts, window_denoising

    gen = torch.Generator("cpu").manual_seed(cfg.seed)
    windows = loaded is not None and loaded.windows
    if windows:  # the adapters decide the mix; region_prompts reads it from the config
        cfg = replace(cfg, mix="windows")
    masks = None
    if loaded is not None and loaded.regional and not windows:
        masks = _regional_masks(pipe, cfg, loaded)
    # with windows, each window reads its own text chunk instead of a cross-attention mask
    text, text_mask = (_stacked_text(pipe, cfg), None) if windows else _prompt_inputs(pipe, cfg)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        scheduler = sampling_scheduler(pipe.scheduler, cfg.sampler, cfg.shift)
        stack.enter_context(swapped_scheduler(pipe, scheduler))
        if cfg.fast and not masks and text_mask is None:
            stack.enter_context(fast.pipeline(pipe))
        if windows:  # after the fast path, so that each window's pass runs through it
            stack.enter_context(
                window_denoising(
                    pipe.transformer, _windows(pipe, cfg, loaded), text_tokens_for(pipe)
                )
            )
        if masks:
            stack.enter_context(regional(pipe.transformer, masks))
        if text_mask is not None:
            stack.enter_context(regional_prompts(pipe.transformer, text_mask))
        video = pipe(
            **text,
            height=cfg.height,
            width=cfg.width,
            num_frames=cfg.frames,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance,
            generator=gen,
            latents=noise,
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
