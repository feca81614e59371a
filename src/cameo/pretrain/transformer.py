"""The transformer stage: Wan's transformer trained with the flow-matching objective on the
run's latent cache (``data.build_cache``), from scratch or warm-started (``warm_start``)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import torch
from diffusers import WanImageToVideoPipeline, WanPipeline

from ..diffusion import flow_matching_loss
from ..models import build_scheduler, load_text_encoder, quiet_diffusers
from ..training import checkpoint as ckpt
from .config import PretrainConfig
from .data import _cache_to, _transformer_batch, build_cache, famous_sample_weights
from .stage import run_stage
from .transformer_init import warm_start


def train_transformer(cfg: PretrainConfig, run: Path, vae, pipe, device: torch.device):
    """Train (or resume) the transformer stage in ``<run>/transformer`` on the latent cache,
    built first with ``vae`` and ``pipe``'s text encoder when the run has none (for --task
    i2v with each sample's first-frame condition, read beside the noisy latents); returns the
    transformer in eval mode, or None when the time budget or Ctrl+C stopped the stage."""
    torch.manual_seed(cfg.seed + 1)
    model = cfg.transformer.build()
    if cfg.init_transformer and ckpt.latest(run / "transformer") is None:
        record = warm_start(model, cfg.init_transformer)
        (run / "transformer_init.json").write_text(json.dumps(record, indent=2))
    model = model.to(device).train()
    first_pipe = _first_frame_pipeline(pipe, model) if cfg.task == "i2v" else None
    cache = _cache_to(build_cache(cfg, run, vae, pipe, first_pipe), device)
    if first_pipe is not None and "conditions" not in cache["groups"]["clip"]:
        raise FileNotFoundError(
            f"{run / 'cache.pt'} holds no first-frame conditions (a text-to-video cache); "
            "delete it to rebuild it for --task i2v"
        )
    if cfg.famous_weight != 1:
        listed = run / "cache_captions.json"
        if not listed.is_file():
            raise FileNotFoundError(
                f"--famous-weight reads the cache's captions from {listed}, which is missing; "
                "copy it beside cache.pt, or delete cache.pt to rebuild both"
            )
        captions = json.loads(listed.read_text())
        famous_sample_weights(cache, captions, cfg.famous_weight)

    def step_loss(batch) -> dict:
        _name, x0, text, noise, sigmas, first = batch
        loss = flow_matching_loss(model, x0, text, sigmas, noise, first=first).mean()
        loss.backward()
        return {"loss": loss.detach()}

    finished = run_stage(
        cfg,
        run,
        "transformer",
        model,
        list(model.parameters()),
        steps=cfg.steps,
        minutes=cfg.transformer_minutes,
        lr=cfg.lr,
        warmup=cfg.warmup,
        weight_decay=0.01,
        ema=cfg.ema,
        workers=0,  # batches are gathered from the cache where it lives (the GPU): no rendering
        make_batch=partial(_transformer_batch, cache, cfg),
        step_loss=step_loss,
    )
    return model.eval() if finished else None


def _pipeline_for(vae, transformer=None):
    """A WanPipeline around the given parts (and MiniLM), for prompt encoding and sampling."""
    quiet_diffusers()
    tok, enc = load_text_encoder()
    pipe = WanPipeline(
        tokenizer=tok,
        text_encoder=enc,
        vae=vae,
        transformer=transformer,
        scheduler=build_scheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _first_frame_pipeline(pipe, transformer):
    """A ``WanImageToVideoPipeline`` (no CLIP image encoder) over ``pipe``'s VAE and text
    encoder, to encode each cached clip's first frame exactly as generation will."""
    return WanImageToVideoPipeline(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        vae=pipe.vae,
        scheduler=pipe.scheduler,
        transformer=transformer,
    )
