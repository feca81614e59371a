"""The performance suite on a GPU: cameo's LoRA training step against the stock diffusers + PEFT
loop on a random-weight transformer of Wan2.1-T2V-1.3B's exact configuration (480x832, 33
frames, bf16 base, fp32 LoRA rank 16 on the attention projections, batch 1, 512 text tokens;
nothing is downloaded, random weights are fine for speed).

    python benchmarks/gpu_performance.py --out gpu_performance.json          # on a GPU
    python benchmarks/gpu_performance.py --out /tmp/p.json --smoke            # CPU check

Seconds per step (variants timed in turns, median), peak tensor memory of each variant alone,
and the achieved FLOP/s (torch's FlopCounterMode over one step: matmuls and attention) as a
fraction of the GPU's measured bf16 matrix-multiply peak. ``--smoke`` runs the same code on
the CPU with cameo-tiny's transformer in fp32, to check the script where no GPU is available.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from perf_setup import CLOCK, ComponentSteps, StockLoop, interleaved, ratio

ROOT = Path(__file__).resolve().parents[1]
SHAPE = {"height": 480, "width": 832, "frames": 33, "text_tokens": 512}
SMOKE_SHAPE = {"height": 32, "width": 32, "frames": 5, "text_tokens": 16}
RANK = 16


def transformer(config_dir: Path, device: str, dtype: torch.dtype):
    """The real WanTransformer3DModel class built from a config, with small random weights."""
    from diffusers import WanTransformer3DModel

    cfg = WanTransformer3DModel.load_config(config_dir)
    with torch.device(device):  # built in place, so the rotary buffers are computed, not empty
        model = WanTransformer3DModel.from_config(cfg)
    model = model.to(dtype)
    for name, module in model.named_modules():  # as from_pretrained(torch_dtype=...) keeps them
        if set(name.split(".")) & set(model._keep_in_fp32_modules or []):
            module.float()
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02, generator=g)
    return model


def batches(cfg: dict, shape: dict, device: str, n: int = 2) -> list[dict]:
    from cameo.diffusion import sample_sigmas
    from cameo.models import FLOW_SHIFT

    g = torch.Generator().manual_seed(0)
    lat = (
        1,
        cfg["in_channels"],
        (shape["frames"] - 1) // 4 + 1,
        shape["height"] // 8,
        shape["width"] // 8,
    )
    out = []
    for _ in range(n):
        x0 = torch.randn(lat, generator=g)
        out.append(
            {
                "x0": x0.to(device),
                "noise": torch.randn(lat, generator=g).to(device),
                "sigmas": sample_sigmas(1, FLOW_SHIFT, g).to(device),
                "text": torch.randn(1, shape["text_tokens"], cfg["text_dim"], generator=g).to(
                    device
                ),
            }
        )
    return out


class Synced:
    """A step that waits for the device to finish, so wall-clock turns time the work."""

    def __init__(self, step, device: str):
        self.step, self.cuda = step, device.startswith("cuda")

    def __call__(self):
        out = self.step()
        if self.cuda:
            torch.cuda.synchronize()
        return out


def peak_bytes(make, device: str, steps: int = 2) -> int:
    """Peak tensor memory while one variant alone takes a few steps (CUDA only)."""
    if not device.startswith("cuda"):
        return 0
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    step = make()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del step
    torch.cuda.empty_cache()
    return peak


def step_flops(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--smoke", action="store_true", help="CPU, cameo-tiny, fp32: check the script")
    ap.add_argument("--repeats", type=int, default=9, help="timed turns per variant")
    args = ap.parse_args()
    from cameo.estimate import measured_matmul_tflops
    from cameo.lora import LoraSpec
    from cameo.models import tiny_model_dir
    from cameo.training import TrainConfig

    if args.smoke:
        device, dtype, shape = "cpu", torch.float32, SMOKE_SHAPE
        config_dir, mixed, autocast = tiny_model_dir() / "transformer", "no", None
    elif torch.cuda.is_available():
        device, dtype, shape = "cuda", torch.bfloat16, SHAPE
        config_dir = ROOT / "configs" / "wan" / "Wan2.1-T2V-1.3B" / "transformer"
        mixed, autocast = "bf16", torch.bfloat16
    else:
        print("gpu_performance: no CUDA device (use --smoke to check the script on a CPU)")
        return 2
    CLOCK["clock"] = "wall"
    started = time.time()
    cfg = json.loads((config_dir / "config.json").read_text())
    data = batches(cfg, shape, device)
    texts = torch.cat([b["text"] for b in data])
    spec = LoraSpec(rank=RANK, alpha=RANK)
    train_cfg = TrainConfig.from_options(data=".", trigger="x", rank=RANK, alpha=RANK)

    def make_cameo():
        return Synced(
            ComponentSteps(transformer(config_dir, device, dtype), spec, data, texts, autocast),
            device,
        )

    def make_stock():
        model = transformer(config_dir, device, dtype)
        return Synced(StockLoop(model, train_cfg, data, mixed_precision=mixed), device)

    peaks = {"cameo": peak_bytes(make_cameo, device), "stock": peak_bytes(make_stock, device)}
    steps = {"cameo": make_cameo(), "stock": make_stock()}
    flops = {k: step_flops(s) for k, s in steps.items()}
    res = interleaved(steps, args.repeats, 1)
    rate = (
        measured_matmul_tflops(n=8192, device="cuda", dtype=torch.bfloat16) * 1e12
        if device == "cuda"
        else measured_matmul_tflops() * 1e12
    )
    gb = 1024**3
    result = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)",
        "torch": torch.__version__,
        "config": str(config_dir.relative_to(ROOT))
        if config_dir.is_relative_to(ROOT)
        else str(config_dir),
        "shape": shape,
        "precision": "bf16 base, fp32 LoRA" if device == "cuda" else "fp32",
        "lora": f"rank {RANK} on {spec.target_list()}",
        "matmul_peak_flops_per_s": rate,
        "repeats": args.repeats,
        "minutes": (time.time() - started) / 60,
    }
    for k in steps:
        t = res[k]["median_s"]
        result[k] = {
            "s_per_step": t,
            "spread": res[k]["spread"],
            "peak_gb": peaks[k] / gb,
            "flops_per_step": flops[k],
            "fraction_of_matmul_peak": flops[k] / t / rate,
        }
    result["cameo_over_stock"] = ratio(res, "cameo", "stock")
    result["peak_cameo_over_stock"] = peaks["cameo"] / peaks["stock"] if peaks["stock"] else None
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
