"""`cameo estimate` against measured memory on this machine (CPU): what a LoRA training step of
cameo-tiny adds over the loaded model, in a fresh process per setting.

    .venv/bin/python benchmarks/estimate_check.py

Writes docs/estimate_check.json. Each child runs with glibc's mmap threshold at 16 KB, so every
tensor larger than that is its own mapping, returned to the system when freed: the resident
set then follows the live tensors, and its high-water mark (VmHWM, reset through
/proc/self/clear_refs after loading and a warm-up forward) is the step's peak. Compared with
the prediction of what the step adds: the LoRA's gradients and AdamW moments (its weights are
loaded before the baseline) and the activations.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

CHILD = r"""
import json, sys, torch
from cameo.models import load_pipeline
from cameo.lora import LoraSpec, add_lora, lora_parameters
from cameo.diffusion import flow_matching_loss
batch, frames, checkpointing = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
torch.set_num_threads(2)
model = load_pipeline().transformer
add_lora(model, LoraSpec(rank=16, alpha=16))
if checkpointing:
    model.enable_gradient_checkpointing()
model.train()
opt = torch.optim.AdamW(lora_parameters(model), lr=1e-4)
cfg, s = model.config, 4  # cameo-tiny's VAE: 4 pixels a latent
x0 = torch.randn(batch, cfg.in_channels, (frames - 1) // 4 + 1, 64 // s, 64 // s)
text = torch.randn(batch, 64, cfg.text_dim)
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key))
with torch.no_grad():
    model(hidden_states=x0[:1], timestep=torch.tensor([500.0]), encoder_hidden_states=text[:1], return_dict=False)
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
base = status("VmRSS:")
for _ in range(3):
    loss = flow_matching_loss(model, x0, text, torch.rand(batch), torch.randn_like(x0)).mean()
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
print(json.dumps({"measured_gb": (status("VmHWM:") - base) / 1024**3}))
"""
ENV = {"MALLOC_MMAP_THRESHOLD_": "16384", "MALLOC_ARENA_MAX": "1"}
SETTINGS = [(8, 1, False), (32, 1, False), (8, 17, False), (32, 17, False), (32, 17, True)]


def measure(batch: int, frames: int, checkpointing: bool = False) -> float:
    """GB a cameo-tiny LoRA step (rank 16, 64x64) adds over the loaded model, measured."""
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(batch), str(frames), "1" if checkpointing else "0"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **ENV},
    )
    return json.loads(r.stdout.strip().splitlines()[-1])["measured_gb"]


def predict(batch: int, frames: int, checkpointing: bool = False) -> float:
    """What `cameo estimate` says the same step adds (GB)."""
    from cameo.estimate import estimate
    from cameo.lora import LoraSpec
    from cameo.models import tiny_model_dir

    e = estimate(
        tiny_model_dir(),
        spec=LoraSpec(rank=16, alpha=16),
        batch=batch,
        frames=frames,
        height=64,
        width=64,
        grad_checkpointing=checkpointing,
        matmul_tflops=0.17,
    )
    return 0.75 * e.lora_state_gb + e.activations_gb  # the LoRA's weights are in the baseline


def main() -> None:
    from common import write_json

    rows = []
    for batch, frames, checkpointing in SETTINGS:
        predicted, measured = (
            predict(batch, frames, checkpointing),
            measure(batch, frames, checkpointing),
        )
        rows.append(
            {
                "batch": batch,
                "frames": frames,
                "grad_checkpointing": checkpointing,
                "predicted_gb": predicted,
                "measured_gb": measured,
                "ratio": measured / predicted,
            }
        )
        print(rows[-1], flush=True)
    print(
        write_json(
            "estimate_check.json",
            {
                "command": "python benchmarks/estimate_check.py",
                "method": __doc__.split("\n\n")[2],
                "rows": rows,
            },
        )
    )


if __name__ == "__main__":
    main()
