"""`cameo estimate` against measured memory on this machine (CPU): peak RSS growth of a LoRA
training step over the loaded model, in a fresh process per setting.

    .venv/bin/python benchmarks/estimate_check.py

Writes docs/estimate_check.json. The prediction compared is LoRA state + activations (the
frozen weights are already in the baseline). RSS counts what the allocator holds, so expect
the measurement to sit somewhat above the prediction.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_json

CHILD = r"""
import json, resource, sys, torch
from cameo.models import load_pipeline
from cameo.lora import LoraSpec, add_lora, lora_parameters
from cameo.diffusion import flow_matching_loss
batch, frames = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(2)
pipe = load_pipeline()
model = pipe.transformer
add_lora(model, LoraSpec(rank=16, alpha=16))
opt = torch.optim.AdamW(lora_parameters(model), lr=1e-4)
lat_f = (frames - 1) // 4 + 1
x0 = torch.randn(batch, 8, lat_f, 8, 8); text = torch.randn(batch, 64, 384)
with torch.no_grad():
    model(hidden_states=x0[:1], timestep=torch.tensor([500.0]), encoder_hidden_states=text[:1], return_dict=False)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for _ in range(3):
    loss = flow_matching_loss(model, x0, text, torch.rand(batch), torch.randn_like(x0)).mean()
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"measured_gb": (peak - base) / 1024**2}))
"""


def main() -> None:
    from cameo.estimate import estimate
    from cameo.lora import LoraSpec
    from cameo.models import tiny_model_dir

    rows = []
    for batch, frames in ((8, 1), (32, 1), (8, 17), (32, 17)):
        e = estimate(
            tiny_model_dir(),
            spec=LoraSpec(rank=16, alpha=16),
            batch=batch,
            frames=frames,
            height=64,
            width=64,
            matmul_tflops=0.17,
        )
        r = subprocess.run(
            [sys.executable, "-c", CHILD, str(batch), str(frames)],
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(r.stdout.strip().splitlines()[-1])["measured_gb"]
        predicted = e.lora_state_gb + e.activations_gb
        rows.append(
            {
                "batch": batch,
                "frames": frames,
                "predicted_gb": predicted,
                "measured_gb": measured,
                "ratio": measured / predicted,
            }
        )
        print(rows[-1], flush=True)
    print(
        write_json(
            "estimate_check.json", {"command": "python benchmarks/estimate_check.py", "rows": rows}
        )
    )


if __name__ == "__main__":
    main()
