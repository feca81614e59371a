"""``cameo estimate``: peak memory and time per step of a LoRA run, predicted before launch.

The transformer is built on the meta device from its config (no weights read), so the count of
parameters and of adapted matrices is exact. Memory = frozen weights + LoRA weights, gradients
and AdamW moments + activations kept for backward. Activations per token and block are
counted from the Wan block's tensors (below); attention scores are counted only when no fused
(flash / memory-efficient) kernel is used, as on CPU. Time = training FLOPs / a sustained
matmul rate (measured on this machine unless given).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel

from .lora import LoraSpec

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass
class Estimate:
    params_total: int
    params_lora: int
    tokens_per_sample: int
    weights_gb: float
    lora_state_gb: float
    activations_gb: float
    peak_gb: float
    flops_per_step: float
    seconds_per_step: float
    matmul_tflops: float

    def format(self) -> str:
        return "\n".join(
            [
                f"transformer parameters   {self.params_total / 1e6:10.2f} M (frozen)",
                f"LoRA parameters          {self.params_lora / 1e6:10.3f} M (trained)",
                f"tokens per sample        {self.tokens_per_sample:10d}",
                f"frozen weights           {self.weights_gb:10.3f} GB",
                f"LoRA weights+grads+Adam  {self.lora_state_gb:10.3f} GB",
                f"activations for backward {self.activations_gb:10.3f} GB",
                f"predicted peak           {self.peak_gb:10.3f} GB (transformer stage; VAE and text encoder are not loaded while training on cached inputs)",
                f"training FLOPs per step  {self.flops_per_step / 1e12:10.4f} TFLOP",
                f"predicted time per step  {self.seconds_per_step:10.4f} s at {self.matmul_tflops:.3f} TFLOP/s sustained",
            ]
        )


def meta_transformer(base_dir: Path):
    cfg = WanTransformer3DModel.load_config(Path(base_dir) / "transformer")
    with torch.device("meta"):
        return WanTransformer3DModel.from_config(cfg), cfg


def vae_spatial_factor(base_dir: Path) -> int:
    """Pixels per latent along H and W, from the base's VAE config (Wan's VAEs: 8)."""
    path = Path(base_dir) / "vae" / "config.json"
    if not path.is_file():
        return 8
    return int(json.loads(path.read_text()).get("scale_factor_spatial") or 8)


def lora_param_count(model: torch.nn.Module, spec: LoraSpec) -> int:
    total = 0
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and any(name.endswith(t) for t in spec.target_list()):
            total += spec.rank * (mod.in_features + mod.out_features)
    return total


def measured_matmul_tflops(n: int = 1024, device: str = "cpu", dtype=torch.float32) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    reps, t0 = 5, time.perf_counter()
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def estimate(
    base_dir: Path,
    *,
    spec: LoraSpec,
    batch: int,
    frames: int,
    height: int,
    width: int,
    text_tokens: int | None = None,
    precision: str = "fp32",
    grad_checkpointing: bool = False,
    fused_attention: bool = False,
    matmul_tflops: float | None = None,
    prior_preservation: bool = False,
    prior_source: str = "photos",
) -> Estimate:
    """Predict the peak memory (GB) and seconds per step of ``cameo train`` with these settings.
    ``prior_preservation``: the step also runs the adapted model on the class prompts (kept for
    the one backward), so activations double; with ``prior_source="photos"`` it also runs the
    base on them (no grad) for the target, while "generated" class samples carry their own."""
    model, cfg = meta_transformer(base_dir)
    if text_tokens is None:  # cameo-tiny's MiniLM prompts are 64 tokens; Wan's UMT5 prompts 512
        text_tokens = 64 if cfg["text_dim"] == 384 else 512
    n_params = sum(p.numel() for p in model.parameters())
    n_lora = lora_param_count(model, spec)
    pt, ph, pw = cfg["patch_size"]
    latent_f = (frames - 1) // 4 + 1
    factor = vae_spatial_factor(base_dir)
    tokens = math.ceil(latent_f / pt) * (height // factor // ph) * (width // factor // pw)
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    f, layers, heads = cfg["ffn_dim"], cfg["num_layers"], cfg["num_attention_heads"]
    act_bytes = BYTES[precision]
    # Tensors a Wan block keeps for backward, per token: norms and modulated inputs (~4 d),
    # self-attention q, k, v, output (4 d) plus its input to o (d), cross-attention q and
    # output (2 d) plus text-side k, v (2 d * text/tokens), FFN input (d), hidden pre/post GELU (2 f).
    per_token = 12 * d + 2 * f + 2 * d * text_tokens / max(tokens, 1)
    scores = (
        0 if fused_attention else heads * (tokens * tokens + tokens * text_tokens)
    )  # softmax kept
    per_block = batch * (tokens * per_token + scores) * act_bytes
    if grad_checkpointing:  # block inputs for every layer + one block's full set during recompute
        activations = batch * tokens * d * act_bytes * layers + per_block
    else:
        activations = per_block * layers
    passes = 2 if prior_preservation else 1  # graphs alive at the backward: photos, class prompts
    weights = n_params * BYTES[precision]
    lora_state = n_lora * 16  # fp32 weights, gradients, two AdamW moments
    # FLOPs: forward 2 * linear params * tokens + attention; backward through activations ~ forward
    # (frozen weights skip their weight gradients), plus the recompute when checkpointing.
    linear = sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
    fwd = batch * (2 * linear * tokens + layers * 4 * d * (tokens * tokens + tokens * text_tokens))
    flops = fwd * (3 if grad_checkpointing else 2)
    if prior_preservation:  # the trained pass on class prompts (+ the base's no-grad forward)
        flops += fwd * (3 if grad_checkpointing else 2) + (fwd if prior_source == "photos" else 0)
    rate = matmul_tflops or measured_matmul_tflops()
    gb = 1024**3
    return Estimate(
        params_total=n_params,
        params_lora=n_lora,
        tokens_per_sample=tokens,
        weights_gb=weights / gb,
        lora_state_gb=lora_state / gb,
        activations_gb=passes * activations / gb,
        peak_gb=(weights + lora_state + passes * activations) / gb,
        flops_per_step=flops,
        seconds_per_step=flops / (rate * 1e12),
        matmul_tflops=rate,
    )


def to_json(e: Estimate) -> str:
    return json.dumps(asdict(e), indent=1)
