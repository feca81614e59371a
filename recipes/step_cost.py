"""What one training step costs: its median seconds and the memory training adds over the
loaded model, for a LoRA of rank r or for full fine-tuning (rank 0: every transformer weight
trains, same loss, AdamW). Prints one JSON line.

    python recipes/step_cost.py --base cameo-tiny --rank 16

Only the transformer is loaded, at ``cameo train``'s default batch on the photos' shape. The
RSS high-water mark is reset (Linux clear_refs) before the steps, so the growth is what
training itself holds: activations, gradients, optimiser state. Run it in a fresh process per
setting (the study does), so that no other run's memory counts.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import WanTransformer3DModel

from cameo.diffusion import flow_matching_loss
from cameo.lora import LoraSpec, add_lora, lora_parameters
from cameo.models import resolve_base
from cameo.models.profiles import detect_profile


def status_kib(key: str) -> int:
    """A field of /proc/self/status (VmRSS: resident now; VmHWM: its high-water mark), KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def step_cost(base: str, rank: int, repeats: int = 5) -> dict:
    """``step_s``: median seconds of ``repeats`` steps after two warm-up steps (allocator and
    optimiser state); ``train_mib``: the RSS high-water mark's growth over those steps."""
    batch = detect_profile(resolve_base(base)).batch
    model = WanTransformer3DModel.from_pretrained(resolve_base(base) / "transformer").train()
    if rank == 0:
        params = list(model.parameters())
    else:
        add_lora(model, LoraSpec(rank=rank, alpha=rank))
        params = lora_parameters(model)
    opt = torch.optim.AdamW(params, lr=1e-4)
    c = model.config
    x0 = torch.randn(batch, c.in_channels, 1, 8, 8)  # (B, C, F, h, w): photos, one latent frame
    text = torch.randn(batch, 64, c.text_dim)
    before = status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    times = []
    for _ in range(repeats + 2):
        t0 = time.perf_counter()
        loss = flow_matching_loss(model, x0, text, torch.rand(batch), torch.randn_like(x0))
        loss.mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return {
        "step_s": float(np.median(times[2:])),
        "train_mib": (status_kib("VmHWM") - before) / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python recipes/step_cost.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base", default="cameo-tiny", help="base model (default: cameo-tiny)")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank; 0 = full fine-tuning")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps (default: 5)")
    args = parser.parse_args(argv)
    print(json.dumps(step_cost(args.base, args.rank, args.repeats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
