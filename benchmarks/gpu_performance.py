"""The GPU measurements of docs/performance.md: LoRA training steps and generation on random
weights of the real Wan2.1-T2V-1.3B and 14B configurations (configs/wan/; nothing downloaded,
random weights are fine for time and memory) at 480x832, 33 frames, 512 text tokens, batch 1.

    python benchmarks/gpu_performance.py --out $OUT/gpu_performance.json --budget-s 200   # GPU
    python benchmarks/gpu_performance.py --out /tmp/p.json --tiny                          # CPU

Each variant is timed on its own model (built in place, then freed), its peak the CUDA
allocator's ``max_memory_allocated`` over its steps (set up excluded); every row also carries
what ``cameo estimate`` predicts for it. Training variants, all bf16 with gradient
checkpointing and a rank-16 fp32 LoRA on the default targets:

- 1.3B: cameo's step (the Trainer's parts: PEFT adapter on a flat fp32 buffer, fused AdamW,
  foreach clipping, ``models.memory`` placement) against the stock diffusers + PEFT loop
  (``perf_setup.StockLoop``); the same with fp8 (cameo: ``place_for_training(fp8=True)``; stock:
  ``enable_layerwise_casting`` before ``add_adapter``, diffusers' default checkpointing) and
  with block offload (stock: ``enable_group_offload`` after the adapter, streams on);
- 14B: cameo against stock in bf16 (80 GB cards only), then cameo with fp8 + block offload
  with the allocator capped at 24 GB (``torch.cuda.set_per_process_memory_fraction``);
- generation seconds per clip (1.3B, 4 steps with CFG, UMT5-XXL text encoder, Wan VAE).

The JSON is rewritten after every variant, so a run stopped by its time limit keeps what it
measured; ``--budget-s`` stops starting variants after that many seconds. ``--tiny`` runs the
same code on the CPU with 2-block models of the same classes (the dry run; no timings worth
reading).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from perf_setup import StockLoop

ROOT = Path(__file__).resolve().parents[1]
SHAPE = {"height": 480, "width": 832, "frames": 33, "text_tokens": 512}
TINY_SHAPE = {"height": 32, "width": 32, "frames": 5, "text_tokens": 16}
TINY = dict(num_layers=2, num_attention_heads=2, attention_head_dim=16, ffn_dim=64, text_dim=32,
            freq_dim=16)  # fmt: skip
RANK, GB, CAP_GB = 16, 1024**3, 24


def transformer(config_dir: Path, device: str, dtype: torch.dtype, overrides: dict | None = None):
    """The real WanTransformer3DModel class built from a config, with small random weights."""
    from diffusers import WanTransformer3DModel

    cfg = {**WanTransformer3DModel.load_config(config_dir), **(overrides or {})}
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
        out.append(
            {
                "x0": torch.randn(lat, generator=g).to(device),
                "noise": torch.randn(lat, generator=g).to(device),
                "sigmas": sample_sigmas(1, 3.0, g).to(device),
                "text": torch.randn(1, shape["text_tokens"], cfg["text_dim"], generator=g).to(
                    device
                ),
            }
        )
    return out


class CameoStep:
    """cameo's LoRA step as ``Trainer`` takes it: adapter added, fp32, gradient checkpointing,
    ``place_for_training`` (fp8, offload), then the flat fp32 buffer, fused AdamW, clipping."""

    def __init__(self, model, data, device: str, fp8: bool = False, offload: str = "none"):
        from cameo.lora import LoraSpec, add_lora, lora_parameters
        from cameo.models.memory import place_for_training
        from cameo.training import flat

        add_lora(model, LoraSpec(rank=RANK, alpha=RANK))
        for p in lora_parameters(model):
            p.data = p.data.float()
        model.enable_gradient_checkpointing()
        model.train()
        self.notes = place_for_training(None, model, device=device, fp8=fp8, offload=offload)
        self.lora = lora_parameters(model)
        self.flat = flat.FlatParameters(self.lora)
        self.opt = flat.fused_adamw([self.flat.param], lr=1e-4)
        self.model, self.data, self.device, self.i = model, data, device, 0

    def __call__(self) -> float:
        from cameo.diffusion import flow_matching_loss

        b = self.data[self.i % len(self.data)]
        self.i += 1
        kind = torch.device(self.device).type
        with torch.autocast(kind, dtype=torch.bfloat16):
            loss = flow_matching_loss(
                self.model, b["x0"], b["text"], b["sigmas"], b["noise"]
            ).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([self.flat.param], 1.0, foreach=True)
        self.opt.step()
        self.flat.zero_grad()
        return loss.item()


def stock_step(model, data, device: str, fp8: bool = False, offload: str = "none"):
    """The stock diffusers + PEFT loop, with diffusers' own fp8 or offload where asked."""
    from cameo.training import TrainConfig

    if fp8:  # before the adapter, as a diffusers user would cast the loaded model
        model.enable_layerwise_casting(
            storage_dtype=torch.float8_e4m3fn, compute_dtype=torch.bfloat16
        )
    model.enable_gradient_checkpointing()
    cfg = TrainConfig.from_options(data=".", trigger="x", rank=RANK, alpha=RANK, lr=1e-4, batch=1)
    loop = StockLoop(model, cfg, data, mixed_precision="bf16")
    if offload != "none":  # after the adapter (and accelerate's placement), streams on
        model.enable_group_offload(
            torch.device(device), offload_type="block_level", num_blocks_per_group=1,
            use_stream=device.startswith("cuda"),
        )  # fmt: skip
    loop.lora = [p for p in model.parameters() if p.requires_grad]
    return loop


class Session:
    """The output JSON, rewritten after every row, and the time budget."""

    def __init__(self, out: Path, budget_s: float, head: dict):
        self.out, self.budget_s, self.t0 = out, budget_s, time.time()
        self.result = {**head, "rows": []}

    def left(self) -> bool:
        return time.time() - self.t0 < self.budget_s

    def add(self, row: dict) -> None:
        row["elapsed_s"] = round(time.time() - self.t0, 1)
        self.result["rows"].append(row)
        self.out.write_text(json.dumps(self.result, indent=1))
        print(json.dumps(row), flush=True)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train_row(
    s: Session,
    name: str,
    build,
    device: str,
    steps: int,
    predicted: float | None,
    cap_gb: float = 0,
) -> None:
    """Set up ``build()`` (a step), take ``steps`` timed steps after one warm-up, record; with
    ``cap_gb`` the allocator may hold no more than that during the steps (set-up excluded)."""
    row: dict = {"variant": name, "predicted_peak_gb": predicted}
    try:
        _free()
        step = build()
        if cap_gb and device.startswith("cuda"):
            _free()
            total = torch.cuda.get_device_properties(0).total_memory / GB
            torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb / total))
            row["capped_gb"] = cap_gb
        before = [p.detach().clone() for p in getattr(step, "lora", [])][:4]
        step()  # warm-up: kernels chosen, optimiser state allocated, prefetch order traced
        _sync(device)
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        times, losses = [], []
        for _ in range(steps):
            t = time.perf_counter()
            losses.append(step())
            _sync(device)
            times.append(time.perf_counter() - t)
        row.update(s_per_step=statistics.median(times), step_times_s=times, losses=losses)
        after = getattr(step, "lora", [])[:4]
        row["lora_updated"] = bool(before) and all(
            not torch.equal(a.to(p.device), p.detach()) for a, p in zip(before, after, strict=True)
        )
        if device.startswith("cuda"):
            row["peak_gb"] = torch.cuda.max_memory_allocated() / GB
            if predicted:
                row["peak_over_predicted"] = row["peak_gb"] / predicted
        row["notes"] = getattr(step, "notes", [])
        del step
    except Exception as err:  # an OOM or a failure is a result too: record it, go on
        row["error"] = f"{type(err).__name__}: {err}"[:600]
        row["where"] = traceback.format_exc().splitlines()[-3:-1]
    if cap_gb and device.startswith("cuda"):
        torch.cuda.set_per_process_memory_fraction(1.0)
    _free()
    s.add(row)


def predicted_peak(base: Path, shape: dict, **kw) -> float:
    from cameo.estimate import estimate
    from cameo.lora import LoraSpec

    e = estimate(base, spec=LoraSpec(rank=RANK, alpha=RANK), batch=1, frames=shape["frames"],
                 height=shape["height"], width=shape["width"], text_tokens=shape["text_tokens"],
                 precision="bf16", grad_checkpointing=True, matmul_tflops=1.0, **kw)  # fmt: skip
    return e.phases["training"]


def _tokenizer():
    """A word-level tokenizer with UMT5's special tokens (random weights read any ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["a", "person", "speaking", "in", "front", "of", "blue", "wall", ",", "mike"]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


def generation_row(s: Session, base: Path, device: str, shape: dict, tiny: bool) -> None:
    """Seconds per clip: UMT5-XXL (random), Wan 2.1's VAE and the transformer, 4 steps, CFG."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    from cameo.estimate import UMT5_XXL
    from cameo.generation import GenerateConfig, generate_frames
    from cameo.models.memory import place_pipeline

    row: dict = {"variant": "generate 1.3B, 4 steps, CFG"}
    try:
        _free()
        te_cfg = UMT5_XXL if not tiny else dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)  # fmt: skip
        with torch.device(device):
            te = UMT5EncoderModel(UMT5Config(**te_cfg)).to(torch.bfloat16).eval()
            vae = AutoencoderKLWan(**({"base_dim": 8} if tiny else {})).to(torch.bfloat16).eval()
        pipe = WanPipeline(tokenizer=_tokenizer(), text_encoder=te, vae=vae,
                           transformer=transformer(base / "transformer", device, torch.bfloat16, TINY if tiny else None),
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))  # fmt: skip
        pipe.set_progress_bar_config(disable=True)
        place_pipeline(pipe, device)
        cfg = GenerateConfig(prompt="mike speaking in front of a blue wall", steps=4, **{k: shape[k] for k in ("frames", "height", "width")})  # fmt: skip
        times = []
        for _ in range(2):  # the first is the warm-up
            _sync(device)
            t = time.perf_counter()
            frames = generate_frames(pipe, cfg)
            _sync(device)
            times.append(time.perf_counter() - t)
        row.update(s_per_clip=times[-1], clip_times_s=times, frames_shape=list(frames.shape))
        if device.startswith("cuda"):
            row["peak_gb"] = torch.cuda.max_memory_allocated() / GB
        del pipe, te, vae
    except Exception as err:
        row["error"] = f"{type(err).__name__}: {err}"[:600]
    _free()
    s.add(row)


def builder(make, base: Path, data, device: str, over, fp8: bool, offload: str):
    """A function that builds the random transformer of ``base`` and sets ``make``'s step up."""

    def build():
        model = transformer(base / "transformer", device, torch.bfloat16, over)
        return make(model, data, device, fp8=fp8, offload=offload)

    return build


def tiny_base(tmp: Path) -> dict[str, Path]:
    """Config-only directories of 2-block models of the 1.3B and 14B shapes (``--tiny``)."""
    out = {}
    for name in ("Wan2.1-T2V-1.3B", "Wan2.1-T2V-14B"):
        cfg = json.loads(
            (ROOT / "configs" / "wan" / name / "transformer" / "config.json").read_text()
        )
        d = tmp / name
        (d / "transformer").mkdir(parents=True)
        (d / "transformer" / "config.json").write_text(json.dumps({**cfg, **TINY}))
        (d / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline"}))
        out[name] = d
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON file to write")
    ap.add_argument("--tiny", action="store_true", help="CPU dry run with 2-block models")
    ap.add_argument("--budget-s", type=float, default=200.0, help="start no variant after this")
    ap.add_argument("--steps", type=int, default=4, help="timed steps per 1.3B variant")
    args = ap.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        print("gpu_performance: no CUDA device (--tiny runs the dry run on the CPU)")
        return 2
    device, shape = ("cpu", TINY_SHAPE) if args.tiny else ("cuda", SHAPE)
    tmp = Path(tempfile.mkdtemp(prefix="cameo-gpu-perf-"))
    bases = tiny_base(tmp) if args.tiny else {n: ROOT / "configs" / "wan" / n for n in ("Wan2.1-T2V-1.3B", "Wan2.1-T2V-14B")}  # fmt: skip
    total = torch.cuda.get_device_properties(0).total_memory / GB if device == "cuda" else 0.0
    s = Session(Path(args.out), args.budget_s, {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run, --tiny)",
        "gpu_memory_gb": total, "torch": torch.__version__, "shape": shape,
        "settings": f"bf16, gradient checkpointing, LoRA rank {RANK} fp32 on the default targets, batch 1",
    })  # fmt: skip
    over = TINY if args.tiny else None
    for name, steps in (("Wan2.1-T2V-1.3B", args.steps), ("Wan2.1-T2V-14B", 2)):
        base, cfg = (
            bases[name],
            json.loads((bases[name] / "transformer" / "config.json").read_text()),
        )
        data, big = batches(cfg, shape, device), name.endswith("14B")
        variants = [("bf16", False, "none")]
        if not big:
            variants += [("fp8", True, "none"), ("offload block", False, "block")]
        elif not args.tiny and total < 60:
            variants = []  # the bf16 14B (27 GB of weights, 38 GB at its peak) needs an 80 GB card
        for label, fp8, offload in variants:
            pred = predicted_peak(base, shape, fp8=fp8, offload=offload)
            for who, make in (("cameo", CameoStep), ("stock", stock_step)):
                if s.left():
                    build = builder(make, base, data, device, over, fp8, offload)
                    row = f"{name} {who} {label}"
                    train_row(s, row, build, device, steps, pred if who == "cameo" else None)
        if big and s.left():  # the 24 GB card's recipe, its steps under a 24 GB cap
            pred = predicted_peak(base, shape, fp8=True, offload="block")
            build = builder(CameoStep, base, data, device, over, True, "block")
            train_row(s, f"{name} cameo fp8 + offload block", build, device, steps, pred, CAP_GB)
    if s.left():
        generation_row(s, bases["Wan2.1-T2V-1.3B"], device, shape, args.tiny)
    s.result["minutes"] = (time.time() - s.t0) / 60
    s.out.write_text(json.dumps(s.result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
