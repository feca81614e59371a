"""Sampling a clip with a stock ``WanPipeline``: initial noise, the flow-matching sampler, and
the call that puts LoRAs, regions and the fast path together."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    DPMSolverMultistepScheduler,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image, ImageOps

from ..compose import regional, regional_prompts, window_denoising
from ..data.images import UnreadableImage, open_image
from ..data.media import save_clip_outputs
from ..models import fast, load_pipeline, resolve_base, text_tokens_for
from ..models.first_frame import is_image_to_video
from ..models.memory import (
    has_hooks,
    place_pipeline,
    resolve_device,
    resolve_dtype,
    transformers_of,
)
from .config import GenerateConfig
from .loras import LoadedLoras, apply_loras
from .regions import prompt_inputs, regional_masks, stacked_text, window_plan


def initial_noise(pipe, cfg: GenerateConfig) -> torch.Tensor:
    """The noise the pipeline starts from for ``cfg``'s size and seed, (1, C, F', H/s, W/s):
    given back to ``generate_frames`` as ``noise`` it gives the same clip; a crop of a wider
    clip's noise gives a narrower clip that starts from the same numbers (paired comparisons).
    Drawn as both Wan pipelines draw it: C is the VAE's latent channels."""
    cfg = cfg.resolved()
    f = (cfg.frames - 1) // pipe.vae_scale_factor_temporal + 1
    s = pipe.vae_scale_factor_spatial
    shape = (1, pipe.vae.config.z_dim, f, cfg.height // s, cfg.width // s)
    gen = torch.Generator("cpu").manual_seed(cfg.seed)
    return randn_tensor(shape, generator=gen, device=pipe._execution_device, dtype=torch.float32)


def first_frame(path: str | Path, height: int, width: int) -> Image.Image:
    """The photo at ``path`` (any format cameo reads: HEIC, EXIF-rotated, ...) as the clip's
    first frame: centre-cropped to the clip's aspect and resized to ``width`` x ``height``."""
    try:
        photo = open_image(Path(path), max_side=2 * max(height, width)).image
    except UnreadableImage as e:
        raise ValueError(f"--image {path}: {e}") from e
    return ImageOps.fit(photo, (width, height), Image.Resampling.LANCZOS)


def image_inputs(pipe, cfg: GenerateConfig, image: Image.Image | None = None) -> dict:
    """The first frame an image-to-video ``pipe`` animates (``image=``: ``image``, else the
    photo ``cfg.image``), or nothing for a text-to-video one; an error when they do not
    match."""
    if not is_image_to_video(pipe):
        if cfg.image or image is not None:
            raise ValueError(
                "--image needs an image-to-video base (Wan 2.1/2.2 I2V, TI2V-5B, "
                f"cameo-tiny-i2v); {cfg.base} is text-to-video"
            )
        return {}
    if image is not None:
        return {"image": ImageOps.fit(image.convert("RGB"), (cfg.width, cfg.height))}
    if not cfg.image:
        raise ValueError(f"{cfg.base} animates a given first frame: add --image PHOTO")
    return {"image": first_frame(cfg.image, cfg.height, cfg.width)}


def sampling_scheduler(own, sampler: str = "base", shift: float = 0.0):
    """The scheduler to sample with: ``own`` (the base's) unless another ``sampler`` or a sigma
    ``shift`` is asked for (0: the base's own shift). Every choice is a flow-matching sampler
    with that shift, each spacing its steps its own way: ``euler`` (FlowMatchEulerDiscrete,
    cameo-tiny's), ``unipc`` (UniPC, which Wan's checkpoints ship) or ``dpm++`` (DPM-Solver++
    multistep). The first calls the shift ``shift``, the other two ``flow_shift``."""

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
    image: Image.Image | None = None,
) -> np.ndarray:
    """Run the pipeline; returns uint8 frames (F, H, W, 3). ``noise``: the starting latents
    (1, C, F', H/s, W/s), instead of those drawn from ``cfg.seed``. ``image``: the first frame
    of an image-to-video base, instead of the photo ``cfg.image`` names."""
    cfg = cfg.resolved()
    image = image_inputs(pipe, cfg, image)
    gen = torch.Generator("cpu").manual_seed(cfg.seed)
    windows = loaded is not None and loaded.windows
    if windows:  # the adapters decide the mix; region_prompts reads it from the config
        cfg = replace(cfg, mix="windows")
    masks = None
    if loaded is not None and loaded.regional and not windows:
        masks = regional_masks(pipe, cfg, loaded)
    # with windows, each window reads its own text chunk instead of a cross-attention mask
    text, text_mask = (stacked_text(pipe, cfg), None) if windows else prompt_inputs(pipe, cfg)
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.no_grad())
        scheduler = sampling_scheduler(pipe.scheduler, cfg.sampler, cfg.shift)
        stack.enter_context(swapped_scheduler(pipe, scheduler))
        plain = not any(has_hooks(m) for m in transformers_of(pipe))  # no fp8, no offload
        if cfg.fast and not masks and text_mask is None and plain:
            stack.enter_context(fast.pipeline(pipe))
        if windows:  # after the fast path, so that each window's pass runs through it
            stack.enter_context(
                window_denoising(
                    pipe.transformer, window_plan(pipe, cfg, loaded), text_tokens_for(pipe)
                )
            )
        if masks:
            stack.enter_context(regional(pipe.transformer, masks))
        if text_mask is not None:
            stack.enter_context(regional_prompts(pipe.transformer, text_mask))
        video = pipe(
            **text,
            **image,
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


def load_for(cfg: GenerateConfig):
    """The pipeline ``cfg`` asks for, with its LoRAs: loaded on the CPU in ``cfg.dtype``, the
    LoRAs applied (fused if ``cfg.fuse``) while the weights are plain, then placed on
    ``cfg.device`` with ``cfg.fp8_base`` and ``cfg.offload``. Returns (pipe, loaded LoRAs)."""
    device = resolve_device(cfg.device)
    base_dir = resolve_base(cfg.base)
    pipe = load_pipeline(
        base_dir,
        "cpu",
        resolve_dtype(cfg.dtype, device, base_dir),
        image_to_video=True if cfg.image else None,
    )
    loaded = apply_loras(pipe, cfg.lora, cfg.fuse, base_dir, cfg.mix, cfg.region)
    place_pipeline(pipe, device, fp8=cfg.fp8_base, offload=cfg.offload)
    return pipe, loaded


def generate_clip(cfg: GenerateConfig, pipe=None) -> np.ndarray:
    """Frames (F, H, W, 3) uint8 for ``cfg``, with its LoRAs at their scales.

    Without ``pipe`` the base is loaded as ``load_for`` does. With a ``pipe`` that the caller
    owns (its device and placement then stand), the LoRAs are loaded as adapters for this clip
    only and removed afterwards, so the pipe is left as it was given."""
    cfg.validate()
    if pipe is None:
        pipe, loaded = load_for(cfg)
        return generate_frames(pipe, cfg, loaded)
    before = set(pipe.get_list_adapters().get("transformer", [])) if cfg.lora else set()
    loaded = apply_loras(pipe, cfg.lora, False, resolve_base(cfg.base), cfg.mix, cfg.region)
    try:
        return generate_frames(pipe, cfg, loaded)
    finally:
        if loaded.names:
            pipe.delete_adapters(loaded.names)
            if before:
                pipe.set_adapters(sorted(before))


def generate_to_files(cfg: GenerateConfig, pipe=None) -> list[Path]:
    """Generate and write the MP4, GIF, PNG contact sheet and a JSON of the settings."""
    frames = generate_clip(cfg, pipe)
    return save_clip_outputs(
        frames, Path(cfg.out), fps=cfg.resolved().fps, overwrite=cfg.overwrite, meta=asdict(cfg)
    )
