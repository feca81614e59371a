"""``cameo pretrain``: train cameo-tiny from the procedural world, VAE first, then transformer
(and, when asked, the decoder stage), and export the pipeline once both are done.

Each stage draws its data from the world by index, so the batch at step s is a pure function of
(seed, s): resuming from a checkpoint replays nothing and skips nothing. Checkpoints are
crash-safe (``cameo.training.checkpoint``); ``--resume`` continues the stage where it stopped.
"""

from __future__ import annotations

import json
import os
import platform
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from diffusers.configuration_utils import FrozenDict

from ..models import TINY_I2V, resolve_base, save_pipeline_dir
from ..models.first_frame import I2V_PIPELINE
from .config import PretrainConfig, resolve_architecture
from .decoder import _latest_decoder, _load_finished_vae, check_denoiser, decoder_stage
from .stage import pick_device, start_invocation
from .transformer import _pipeline_for, train_transformer
from .transformer_init import check_warm_start
from .vae import latent_stats, train_vae


def _record_invocation(run: Path) -> None:
    """Append this command line to invocations.jsonl, so the model card can list every
    command that shaped the weights (resumes included)."""
    rec = {
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "argv": ["cameo", *sys.argv[1:]],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
    }
    with open(run / "invocations.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def exported_name(task: str) -> str:
    """The folder of a run's exported pipeline: cameo-tiny, or cameo-tiny-i2v for --task i2v."""
    return TINY_I2V if task == "i2v" else "cameo-tiny"


def _run_vae(cfg: PretrainConfig, run: Path, device: torch.device):
    """The run's finished VAE with its latent statistics, on ``device``: ``--vae-from``'s, or
    the VAE stage's (trained first when the stage is vae or all); None when the time budget
    or Ctrl+C stopped the VAE stage."""
    if cfg.vae_from:  # its statistics are the ones its transformer learnt on: kept as they are
        vae = AutoencoderKLWan.from_pretrained(resolve_base(cfg.vae_from) / "vae").float()
        # where it was loaded from is no part of the exported config (the run's config.json is)
        config = {k: v for k, v in vae.config.items() if k != "_name_or_path"}
        vae._internal_dict = FrozenDict(config)
        return vae.to(device).eval()
    if cfg.stage in ("vae", "all") and train_vae(cfg, run, device) is None:
        return None
    vae = _load_finished_vae(cfg, run).to(device)
    mean, std = latent_stats(vae, cfg)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    return vae


def run_pretrain(cfg: PretrainConfig, resume: bool = False) -> Path | None:
    """Run the configured stages; returns the exported pipeline folder once both are done."""
    resolve_architecture(cfg, resume)
    cfg.validate()
    check_warm_start(cfg)
    run = Path(cfg.out)
    if run.exists() and any(run.iterdir()) and not resume:
        raise FileExistsError(f"{run} already holds a run; pass --resume to continue it")
    check_denoiser(cfg, run)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    _record_invocation(run)
    start_invocation()
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    random.seed(cfg.seed)
    t0 = time.time()
    device = pick_device(cfg.device)
    if device.type == "cuda":  # TF32 matmuls and tuned convolutions: fp32 weights, faster steps
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if cfg.stage == "decoder":
        return decoder_stage(cfg, run)
    vae = _run_vae(cfg, run, device)
    if vae is None or cfg.stage == "vae":
        return None
    pipe = _pipeline_for(vae)
    pipe.text_encoder.to(device)
    model = train_transformer(cfg, run, vae, pipe, device)
    if model is None:
        return None
    vae = _latest_decoder(cfg, run, vae.cpu())
    out = save_pipeline_dir(
        run / exported_name(cfg.task),
        vae,
        model.cpu(),
        dtype=torch.float16,
        pipeline=I2V_PIPELINE if cfg.task == "i2v" else "WanPipeline",
    )
    (run / "timing.json").write_text(json.dumps({"this_invocation_s": time.time() - t0}))
    return out
