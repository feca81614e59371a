"""Several people in one clip: per-region prompts, token masks and denoising windows."""

from __future__ import annotations

import torch

from ..compose import (
    Window,
    region_box,
    region_span,
    region_token_mask,
    regional_text_mask,
    trigger_token_mask,
)
from ..models import encode_prompts, text_tokens_for
from .config import GenerateConfig, parse_region_prompt, region_prompts
from .loras import LoadedLoras


def _token_grid(pipe, cfg: GenerateConfig) -> tuple[int, int, int]:
    """Video tokens of a clip: (frames, rows, columns) after the VAE and the patching."""
    p_t, p_h, p_w = pipe.transformer.config.patch_size
    scale = pipe.vae_scale_factor_spatial
    frames = ((cfg.frames - 1) // pipe.vae_scale_factor_temporal + 1) // p_t
    return frames, cfg.height // scale // p_h, cfg.width // scale // p_w


def _prompts(cfg: GenerateConfig) -> list[str]:
    """The main prompt, then one per --region-prompt (the text the transformer reads, in order)."""
    return [cfg.prompt, *(parse_region_prompt(r)[1] for r in region_prompts(cfg))]


def regional_masks(pipe, cfg: GenerateConfig, loaded: LoadedLoras) -> dict:
    """Per adapter: its region's video-token mask, and the positions of its trigger in the text
    (in the main prompt and in every region prompt)."""

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


def prompt_inputs(pipe, cfg: GenerateConfig) -> tuple[dict, torch.Tensor | None]:
    """What the pipeline is called with for the text, and the cross-attention mask of region
    prompts (None without them). With region prompts, the text is the main prompt followed by
    each region's, (1, (1+R)·T, D); the negative prompt is repeated to the same length."""
    specs = region_prompts(cfg)
    if not specs:
        return {"prompt": cfg.prompt, "negative_prompt": cfg.negative}, None

    grid, length = _token_grid(pipe, cfg), text_tokens_for(pipe)
    regions = [region_token_mask(parse_region_prompt(r)[0], *grid) for r in specs]
    return stacked_text(pipe, cfg), regional_text_mask(regions, length)


def stacked_text(pipe, cfg: GenerateConfig) -> dict:
    """The main prompt followed by each region prompt, (1, (1+R)·T, D), and the negative prompt
    repeated to the same length, as the pipeline's ``prompt_embeds`` arguments."""
    prompts = _prompts(cfg)
    text = encode_prompts(pipe, prompts).reshape(1, len(prompts) * text_tokens_for(pipe), -1)
    negative = encode_prompts(pipe, [cfg.negative]).repeat(1, len(prompts), 1)
    return {"prompt_embeds": text, "negative_prompt_embeds": negative}


def window_plan(pipe, cfg: GenerateConfig, loaded: LoadedLoras) -> list:
    """Per adapter, the window of its region in latent pixels, reading the region prompt of the
    same region when there is one (else the main prompt)."""

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
