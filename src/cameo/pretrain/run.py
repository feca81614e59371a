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

from ..models import save_pipeline_dir
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
    if cfg.stage in ("vae", "all"):
        vae = train_vae(cfg, run, device)
        if vae is None:
            return None
    vae = _load_finished_vae(cfg, run).to(device)
    mean, std = latent_stats(vae, cfg)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    if cfg.stage == "vae":
        return None
    pipe = _pipeline_for(vae)
    pipe.text_encoder.to(device)
    model = train_transformer(cfg, run, vae, pipe, device)
    if model is None:
        return None
    vae = _latest_decoder(cfg, run, vae.cpu())
    out = save_pipeline_dir(run / "cameo-tiny", vae, model.cpu(), dtype=torch.float16)
    (run / "timing.json").write_text(json.dumps({"this_invocation_s": time.time() - t0}))
    return out
