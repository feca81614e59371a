"""Which VAE shape keeps a face? Trains one shape from scratch for a fixed number of steps,
then measures PSNR, identity and the probed attributes through it on held-out people (the caps
it puts on every clone and on prompt following).

    .venv/bin/python benchmarks/vae_pilot.py --architecture configs/cameo-tiny/next-4x.toml
    .venv/bin/python benchmarks/vae_pilot.py          # the shipped shape, from scratch

Same data, loss (L1 + MSE + 1e-6 KL), optimiser and learning rate as `cameo pretrain`'s VAE
stage, on one thread. Appends a row to docs/vae_pilot.json.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from base_quality import attributes_through_vae, identity_through_vae
from cameo.metrics.evaluate import Eyes
from cameo.models import VAEConfig, frames_to_vae_input
from cameo.pretrain import PretrainConfig, _psnr, _vae_batch, read_architecture
from cameo.world import person_sample
from common import DOCS, commit, write_json


def held_out(frames: int, n: int) -> torch.Tensor:
    rng = random.Random(f"bench/vae-pilot/{frames}")
    xs = [person_sample("heldout", 30_000 + i, rng, frames=frames).frames for i in range(n)]
    return torch.stack([frames_to_vae_input(x) for x in xs])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--architecture", default="", help="TOML with a [vae] table (default: shipped)")
    ap.add_argument(
        "--steps",
        type=int,
        default=400,
        help="optimiser steps (a fixed count, so a busy machine changes only the minutes)",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    vcfg = read_architecture(Path(args.architecture))[0] if args.architecture else VAEConfig()
    cfg = PretrainConfig(vae=vcfg)
    vae = vcfg.build().train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, betas=(0.9, 0.99))
    t0, step = time.time(), 0
    while step < args.steps:
        for g in opt.param_groups:
            g["lr"] = cfg.vae_lr * min(1.0, (step + 1) / 50)
        for x in _vae_batch(cfg, step):  # photos, then short clips
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
            loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean() + cfg.vae_kl * post.kl().mean()
            loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
    vae.eval()
    row = {"architecture": args.architecture or "shipped shape", "vae": vars(vcfg)}
    row |= {"steps": step, "minutes": round((time.time() - t0) / 60, 1), "commit": commit()}
    row["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    row["params"] = sum(p.numel() for p in vae.parameters())
    with torch.no_grad():
        for name, x in (("photos", held_out(1, 32)), ("clips", held_out(17, 4))):
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            row[f"psnr_{name}_db"] = float(_psnr(((rec - x) ** 2).mean()))
    eyes = Eyes()
    row["identity"] = identity_through_vae(vae, eyes, people=8, per_person=3)
    row["attributes"] = attributes_through_vae(vae, eyes)
    print(json.dumps(row), flush=True)
    path = DOCS / "vae_pilot.json"
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    write_json("vae_pilot.json", {"rows": [*rows, row]})


if __name__ == "__main__":
    main()
