"""The VAE stage: Wan's VAE trained from scratch on single frames and short clips of the world
(L1 + MSE reconstruction, a small KL), and the latent statistics that bring its latents to unit
scale for the transformer."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from ..models import frames_to_vae_input
from ..world import training_sample
from .config import PretrainConfig
from .data import _vae_batch
from .stage import _psnr, run_stage


def train_vae(cfg: PretrainConfig, run: Path, device: torch.device):
    """Train (or resume) the VAE stage in ``<run>/vae``; returns the VAE in eval mode, or None
    when the time budget or Ctrl+C stopped the stage (a checkpoint is saved)."""
    torch.manual_seed(cfg.seed)
    vae = cfg.vae.build().to(device).train()

    def step_loss(batch: list[torch.Tensor]) -> dict:
        logs = {}
        for x in batch:  # (B, 3, F, H, W): photos, then clips
            x = x.to(device, non_blocking=True)
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
            mse = ((rec - x) ** 2).mean()
            loss = (rec - x).abs().mean() + mse + cfg.vae_kl * post.kl().mean()
            loss.backward()
            logs[f"psnr_f{x.shape[2]}"] = _psnr(mse)
            logs["loss"] = logs.get("loss", 0) + loss.detach()
        return logs

    finished = run_stage(
        cfg,
        run,
        "vae",
        vae,
        list(vae.parameters()),
        steps=cfg.vae_steps,
        minutes=cfg.vae_minutes,
        lr=cfg.vae_lr,
        warmup=cfg.warmup,
        make_batch=partial(_vae_batch, cfg),
        step_loss=step_loss,
    )
    return vae.eval() if finished else None


def latent_stats(vae, cfg: PretrainConfig, n: int = 48) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of encoded world frames, so latents enter the transformer
    at unit scale (the pipeline undoes this with the VAE config's latents_mean/std)."""
    xs = torch.stack(
        [
            frames_to_vae_input(
                training_sample(10_000_000 + i, frames=1, size=cfg.size).frames[:, :, : cfg.size]
            )
            for i in range(n)
        ]
    )
    with torch.no_grad():
        z = vae.encode(xs.to(vae.device)).latent_dist.mean.cpu()  # (n, C, 1, h, w)
    return z.mean(dim=(0, 2, 3, 4)).tolist(), z.std(dim=(0, 2, 3, 4)).clamp_min(1e-3).tolist()
