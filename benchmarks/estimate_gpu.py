"""`cameo estimate` against a measured GPU: real Wan 2.1 transformer configs (random weights,
nothing downloaded), one LoRA training step as `cameo train --mixed-precision bf16` takes it
(bf16 frozen base under autocast, fp32 LoRA, AdamW), peak CUDA memory and step time.

    python benchmarks/estimate_gpu.py --out estimate_gpu.json

Run on a GPU machine; writes the rows as JSON (docs/estimate_gpu.json holds the last run).
The training phase of the prediction (weights, LoRA state, activations: no text encoder, no
previews) is compared with `torch.cuda.max_memory_allocated` (what tensors held at peak,
without the allocator's cached slack) and with the median wall time of the timed steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [  # (config folder, frames, gradient checkpointing)
    ("Wan2.1-T2V-1.3B", 33, False),
    ("Wan2.1-T2V-1.3B", 33, True),
    ("Wan2.1-T2V-1.3B", 81, True),
    ("Wan2.1-T2V-14B", 33, True),
]
HEIGHT, WIDTH, TEXT_TOKENS, RANK = 480, 832, 512, 32


def random_transformer(base: Path):
    """The real WanTransformer3DModel class at full size, random bf16 weights, on the GPU
    (gpu_performance.transformer: built in place, so its rotary buffers are computed)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_performance import transformer

    model = transformer(base / "transformer", "cuda", torch.bfloat16)
    return model, model.config


def measure(base: Path, frames: int, checkpointing: bool, steps: int = 4) -> dict:
    from cameo.diffusion import flow_matching_loss
    from cameo.lora import LoraSpec, add_lora, lora_parameters

    torch.cuda.empty_cache()
    model, cfg = random_transformer(base)
    add_lora(model, LoraSpec(rank=RANK, alpha=RANK))
    for p in lora_parameters(model):  # as cameo train: the frozen base bf16, the LoRA fp32
        p.data = p.data.float()
    if checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    opt = torch.optim.AdamW(lora_parameters(model), lr=1e-4)
    lat_f = (frames - 1) // 4 + 1
    x0 = torch.randn(1, cfg["in_channels"], lat_f, HEIGHT // 8, WIDTH // 8, device="cuda")
    text = torch.randn(1, TEXT_TOKENS, cfg["text_dim"], device="cuda")
    torch.cuda.synchronize()
    loaded = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = flow_matching_loss(
                model, x0, text, torch.rand(1, device="cuda"), torch.randn_like(x0)
            ).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated()
    del model, opt, loss
    torch.cuda.empty_cache()
    gb = 1024**3
    return {
        "weights_loaded_gb": loaded / gb,
        "measured_peak_gb": peak / gb,
        "measured_s_per_step": statistics.median(times[1:]),
        "step_times_s": times,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument(
        "--budget-s", type=float, default=100.0, help="stop starting new settings after this"
    )
    args = ap.parse_args()
    from cameo.estimate import estimate, measured_matmul_tflops
    from cameo.lora import LoraSpec

    if not torch.cuda.is_available():
        print("estimate_gpu: no CUDA device", file=sys.stderr)
        return 2
    started = time.time()
    rate = measured_matmul_tflops(n=8192, device="cuda", dtype=torch.bfloat16)
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "bf16_matmul_tflops_measured": rate,
        "clip": f"{HEIGHT}x{WIDTH}, batch 1, {TEXT_TOKENS} text tokens, LoRA rank {RANK} on attention",
        "rows": [],
    }
    for name, frames, checkpointing in SETTINGS:
        if time.time() - started > args.budget_s:
            break
        base = ROOT / "configs" / "wan" / name
        e = estimate(
            base,
            spec=LoraSpec(rank=RANK, alpha=RANK),
            batch=1,
            frames=frames,
            height=HEIGHT,
            width=WIDTH,
            text_tokens=TEXT_TOKENS,
            precision="bf16",
            grad_checkpointing=checkpointing,
            fused_attention=True,
            matmul_tflops=rate,
        )
        row = {
            "base": name,
            "frames": frames,
            "grad_checkpointing": checkpointing,
            "predicted_peak_gb": e.phases["training"],  # the step's own phase
            "predicted_s_per_step": e.seconds_per_step,
        }
        try:
            row.update(measure(base, frames, checkpointing))
            row["peak_ratio"] = row["measured_peak_gb"] / row["predicted_peak_gb"]
            row["time_ratio"] = row["measured_s_per_step"] / row["predicted_s_per_step"]
        except Exception as err:  # an OOM or a failure is a result too: record it, go on
            row["error"] = f"{type(err).__name__}: {err}"[:500]
            torch.cuda.empty_cache()
        result["rows"].append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
