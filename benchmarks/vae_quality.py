"""A pretraining run's VAE beside the shipped one: reconstruction PSNR on held-out renders,
identity and the probed attributes (the cap on prompt following) through one encode/decode
round trip, with the very functions (and held-out sets) of
benchmarks/base_quality.py, so the rows compare with docs/quality.md.

    .venv/bin/python benchmarks/vae_quality.py --run runs/next4x --stage decoder

Writes docs/vae_quality.json (one row per VAE; --json names another file).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from base_quality import attributes_through_vae, identity_through_vae, vae_psnr
from cameo.metrics.evaluate import Eyes
from cameo.models import load_pipeline
from cameo.pretrain import PretrainConfig, _load_finished_vae, resolve_architecture
from cameo.training import checkpoint as ckpt
from common import commit, write_json


def run_vae(run: Path, stage: str):
    """The latest checkpoint of ``stage`` (vae or decoder) of a pretraining run."""
    cfg = PretrainConfig(out=str(run))
    resolve_architecture(cfg, resume=True)  # the run's own shapes, from its config.json
    last = ckpt.latest(run / stage)
    if last is None:
        raise SystemExit(f"no complete {stage} checkpoint in {run}")
    return _load_finished_vae(cfg, run, stage).eval(), cfg, int(last.name.split("-")[-1])


def measure(vae, eyes: Eyes) -> dict:
    with torch.no_grad():
        return {
            **vae_psnr(vae),
            "identity": identity_through_vae(vae, eyes),
            "attributes": attributes_through_vae(vae, eyes),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, help="pretraining run folder (cameo pretrain --out)")
    ap.add_argument(
        "--stage", default="vae", help="vae | decoder | decoder-w<width>: which stage's weights"
    )
    ap.add_argument("--json", default="vae_quality.json", help="file name under docs/")
    args = ap.parse_args()
    torch.set_num_threads(1)
    eyes = Eyes()
    vae, cfg, step = run_vae(Path(args.run), args.stage)
    rows = [
        {"vae": "shipped cameo-tiny", **measure(load_pipeline().vae, eyes)},
        {
            "vae": f"{args.run} ({args.stage} stage, step {step})",
            "shape": vars(cfg.vae),
            "params": sum(p.numel() for p in vae.parameters()),
            **measure(vae, eyes),
        },
    ]
    for r in rows:
        print(json.dumps(r), flush=True)
    out = {
        "command": "python benchmarks/vae_quality.py " + shlex.join(sys.argv[1:]),
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }
    print(write_json(args.json, out))


if __name__ == "__main__":
    main()
