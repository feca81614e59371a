"""``cameo estimate``: the GPU memory and time of a LoRA run, predicted before launch.

The models are built on the meta device from the base's configs (no weights read), so parameter
counts, adapted matrices and what fp8 casting keeps are exact. A run passes through phases,
each holding its own set on the GPU (``models.memory``'s placement); the peak is the largest:

- load: nothing (the pipeline loads into host memory; each part reaches the GPU in its phase);
- caching: the text encoder and the VAE encoding the dataset (plus the whole transformer when
  prior preservation draws the base's own samples), then they leave;
- training: the transformer's frozen weights (bf16, or fp8 at 1 byte a parameter, or with
  offloading only what stays plus the block in flight), the LoRA's fp32 weights, gradients and
  AdamW moments (16 bytes a parameter), and the activations kept for backward;
- teacher: prior preservation's base prediction, a no-grad forward before the step;
- previews: validation clips with the text encoder and the VAE back on the GPU (VAE decode).

Activations per token and block (d = width, f = FFN width): in fp32 10·d + 2·f kept values plus
8·d of backward temporaries, measured on the CPU on cameo-tiny with and without gradient
checkpointing (``benchmarks/estimate_check.py``); under bf16 autocast 16·d + 2·f kept values
(fp32 norms, PEFT's fp32 inputs) plus 12·d of backward temporaries, fitted to four H200 measurements of Wan2.1 1.3B and 14B
(``docs/estimate_gpu.json``: within 2% of each). Attention scores count only where no fused
kernel runs. The VAE's working set (it encodes and decodes a few frames at a time) is measured
on the CPU on the real Wan VAE: 33 (encode) and 53 (decode) x base_dim x H x W values; the
text encoder's, on a scaled-down UMT5: 2·d + 2·ff + 2·heads·T values a token (the position
bias it adds to every score is materialised).
Time = training FLOPs / a sustained matmul rate, plus host-to-GPU transfers when offloading.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import transformers
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from .lora import LoraSpec

BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
BF16 = torch.bfloat16
GB = 1024**3
USABLE = 0.9  # share of a card's memory a run may plan on (CUDA context, allocator slack)
H2D_BYTES_PER_S = 25e9  # pinned host-to-GPU copies (PCIe 4/5); offloading's transfer time
ENCODE_BATCH = 64  # prompts the cache encodes per call (training.cache)
VAE_ENCODE, VAE_DECODE = 33, 53  # working set, in base_dim x H x W values (module docstring)
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                num_heads=64, feed_forward_proj="gated-gelu")  # fmt: skip  # Wan's text encoder


@dataclass
class Estimate:
    """What one run holds, phase by phase (GB), and what a step costs."""

    params_total: int
    params_lora: int
    tokens_per_sample: int
    weights_gb: float  # the trained transformer's weights on the GPU during training
    lora_state_gb: float
    activations_gb: float
    peak_gb: float
    flops_per_step: float
    seconds_per_step: float
    matmul_tflops: float
    phases: dict[str, float] = field(default_factory=dict)
    peak_phase: str = "training"
    host_gb: float = 0.0  # host memory the pipeline loads into
    transfer_s_per_step: float = 0.0
    notes: list[str] = field(default_factory=list)

    def format(self) -> str:
        lines = [
            f"transformer parameters   {self.params_total / 1e6:10.2f} M (frozen)",
            f"LoRA parameters          {self.params_lora / 1e6:10.3f} M (trained)",
            f"tokens per sample        {self.tokens_per_sample:10d}",
            f"frozen weights on GPU    {self.weights_gb:10.3f} GB",
            f"LoRA weights+grads+Adam  {self.lora_state_gb:10.3f} GB",
            f"activations for backward {self.activations_gb:10.3f} GB",
        ]
        lines += [f"phase {name:18s} {gb:10.3f} GB" for name, gb in self.phases.items()]
        lines += [
            f"predicted peak           {self.peak_gb:10.3f} GB ({self.peak_phase})",
            f"host memory to load      {self.host_gb:10.3f} GB",
            f"training FLOPs per step  {self.flops_per_step / 1e12:10.4f} TFLOP",
            f"predicted time per step  {self.seconds_per_step:10.4f} s at "
            f"{self.matmul_tflops:.3f} TFLOP/s sustained"
            + (f" (of which {self.transfer_s_per_step:.2f} s offload transfers)" if self.transfer_s_per_step else ""),
        ]  # fmt: skip
        return "\n".join(lines + [f"note: {n}" for n in self.notes])


def meta_transformer(base_dir: Path, precision: str = "fp32"):
    """The base's transformer on the meta device, in the dtypes ``from_pretrained`` gives it
    (its fp32 modules kept), and its config."""
    cfg = WanTransformer3DModel.load_config(Path(base_dir) / "transformer")
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(cfg)
    if precision != "fp32":
        keep = set(model._keep_in_fp32_modules or [])
        for name, p in model.named_parameters():
            p.data = p.data.to(torch.float32 if set(name.split(".")) & keep else BF16)
        for name, t in model.named_buffers():
            t.data = t.data.to(torch.float32 if set(name.split(".")) & keep else BF16)
    return model, cfg


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


def text_encoder_shape(base_dir: Path) -> dict:
    """Parameters, width, FFN width and heads of the base's text encoder (its config, or
    UMT5-XXL's for a directory that carries only the transformer, as ``configs/wan`` does)."""
    path = Path(base_dir) / "text_encoder"
    index = json.loads((Path(base_dir) / "model_index.json").read_text())
    cls = (index.get("text_encoder") or [None, "UMT5EncoderModel"])[1] or "UMT5EncoderModel"
    if (path / "config.json").is_file():
        config = transformers.AutoConfig.from_pretrained(path)
    else:
        config = transformers.UMT5Config(**UMT5_XXL)
    with torch.device("meta"):
        model = getattr(transformers, cls)(config)
    get = lambda *names: next(getattr(config, n) for n in names if hasattr(config, n))  # noqa: E731
    layers = max(
        (c for m in model.modules() for c in m.children() if isinstance(c, torch.nn.ModuleList)),
        key=lambda c: sum(p.numel() for p in c.parameters()),
    )
    total = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in layer.parameters()) for layer in layers)
    return {
        "params": total,
        # streamed (memory.streamed): all but the layers, plus one layer at a time
        "streamed_params": total - sum(p.numel() for p in layers.parameters()) + largest,
        "d": get("d_model", "hidden_size"),
        "ff": get("d_ff", "intermediate_size"),
        "heads": get("num_heads", "num_attention_heads"),
    }


def image_encoder_params(base_dir: Path) -> int:
    """Parameters of Wan 2.1 I2V's CLIP image encoder (0 for a base without one)."""
    path = Path(base_dir) / "image_encoder"
    if not (path / "config.json").is_file():
        return 0
    config = transformers.AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = transformers.CLIPVisionModelWithProjection(config)
    return sum(p.numel() for p in model.parameters())


def vae_shape(base_dir: Path) -> dict:
    """Parameters and first-stage width of the base's VAE (Wan 2.1's when absent)."""
    path = Path(base_dir) / "vae" / "config.json"
    cfg = AutoencoderKLWan.load_config(path.parent) if path.is_file() else {}
    with torch.device("meta"):
        vae = AutoencoderKLWan.from_config(cfg) if cfg else AutoencoderKLWan()
    return {"params": sum(p.numel() for p in vae.parameters()), "base_dim": vae.config.base_dim}


def transformer_bytes(model, b: int, fp8: bool, offload: str) -> tuple[int, int]:
    """The meta ``model``'s weights on the GPU during training, and what streams in per pass.
    fp8 casts as ``memory.store_in_fp8`` does (on the meta model itself). In flight: the block
    computing (stored form) and, with fp8, its layers' compute-dtype copies, which autograd
    keeps until that block's backward is done; "leaf" brings one layer at a time, but autograd
    still keeps every layer of the block being recomputed."""
    block_params = max(sum(p.numel() for p in blk.parameters()) for blk in model.blocks)
    if fp8:
        model.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=BF16)
    stored = sum(p.nbytes for p in model.parameters())
    blocks = sum(p.nbytes for blk in model.blocks for p in blk.parameters())
    copies = block_params * b if fp8 else 0
    if offload == "none":
        return stored + copies, 0
    in_flight = max(sum(p.nbytes for p in blk.parameters()) for blk in model.blocks) + copies
    if offload == "leaf":
        layer = max(p.nbytes for blk in model.blocks for p in blk.parameters())
        in_flight = block_params * b + layer
    return stored - blocks + in_flight, blocks


def _tokens(cfg: dict, frames: int, height: int, width: int, factor: int) -> int:
    pt, ph, pw = cfg["patch_size"]
    return (
        math.ceil(((frames - 1) // 4 + 1) / pt) * (height // factor // ph) * (width // factor // pw)
    )


def activation_bytes(cfg, tokens, text_tokens, batch, precision, checkpointing, fused) -> int:
    """What the step keeps for backward, at its peak (module docstring for the constants)."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    f, layers, heads = cfg["ffn_dim"], cfg["num_layers"], cfg["num_attention_heads"]
    b = BYTES[precision]
    scores = 0 if fused else heads * (tokens * tokens + tokens * text_tokens) * b
    if precision == "fp32":
        kept, temporaries = (10 * d + 2 * f) * tokens * b, 8 * d * tokens * b
    else:
        kept, temporaries = (16 * d + 2 * f) * tokens * b, 12 * d * tokens * b
    per_block = kept + 2 * d * text_tokens * b + scores  # + the block's text-side k, v
    if checkpointing:  # every block's input, then one block recomputed at a time
        return batch * (layers * tokens * d * b + per_block + temporaries)
    return batch * (layers * per_block + temporaries)


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
    fused_attention: bool = True,
    matmul_tflops: float | None = None,
    prior_preservation: bool = False,
    prior_source: str = "photos",
    fp8: bool = False,
    offload: str = "none",
    previews: bool = False,
    preview_frames: int = 17,
) -> Estimate:
    """Predict the peak GPU memory (GB, by phase) and the seconds per step of ``cameo train``
    with these settings. ``prior_preservation``: the step also runs the adapted model on the
    class prompts in the same forward (activations double); with ``prior_source="photos"`` the
    base predicts their target first (no grad), "generated" draws the base's own samples while
    caching. ``fp8``, ``offload`` ("none", "block", "leaf"): as ``memory.place_for_training``,
    which also turns gradient checkpointing on; with offload the text encoder streams in too
    while caching and for previews (``memory.encoding``). ``previews``: validation clips of
    ``preview_frames`` at the training size."""
    base_dir = Path(base_dir)
    model, cfg = meta_transformer(base_dir, precision)
    b = BYTES[precision]
    if text_tokens is None:  # cameo-tiny's MiniLM prompts are 64 tokens; Wan's UMT5 prompts 512
        text_tokens = 64 if cfg["text_dim"] == 384 else 512
    notes = []
    if (fp8 or offload != "none") and not grad_checkpointing:
        grad_checkpointing = True
        notes.append("fp8 and offload train with gradient checkpointing (switched on)")
    n_params = sum(p.numel() for p in model.parameters())
    n_lora = lora_param_count(model, spec)
    full = sum(p.nbytes for p in model.parameters())
    resident, moved = transformer_bytes(model, b, fp8, offload)
    if offload != "none":
        notes.append(f"offload: {moved / GB:.1f} GB of blocks stream in twice a step")
    tokens = _tokens(cfg, frames, height, width, vae_spatial_factor(base_dir))
    pairs = 2 if prior_preservation else 1  # the class prompts ride in the same forward
    acts = activation_bytes(
        cfg, tokens, text_tokens, pairs * batch, precision, grad_checkpointing, fused_attention
    )
    lora_state = n_lora * 16  # fp32 weights, gradients, two AdamW moments
    d, f = cfg["num_attention_heads"] * cfg["attention_head_dim"], cfg["ffn_dim"]

    def forward_work(n: int, t: int) -> int:  # a no-grad forward's live set, one block at a time
        return n * (8 * d + 2 * f) * t * b

    te, vae = text_encoder_shape(base_dir), vae_shape(base_dir)
    te_bytes = te["params" if offload == "none" else "streamed_params"] * b
    vae_bytes = (vae["params"] + image_encoder_params(base_dir)) * b  # both encode frames
    te_work = (
        ENCODE_BATCH
        * text_tokens
        * (2 * te["d"] + 2 * te["ff"] + 2 * te["heads"] * text_tokens)
        * b
    )  # hidden states, FFN, the position-bias scores
    unit = vae["base_dim"] * height * width * b
    caching = te_bytes + vae_bytes + max(te_work, VAE_ENCODE * unit)
    if prior_preservation and prior_source == "generated":
        caching += full + forward_work(
            1, _tokens(cfg, 1, height, width, vae_spatial_factor(base_dir))
        )
        notes.append("prior source 'generated' brings the whole transformer while caching")
    training = resident + lora_state + acts
    phases = {"load": 0.0, "caching": caching, "training": training}
    if prior_preservation and prior_source == "photos":
        phases["teacher"] = resident + lora_state + forward_work(batch, tokens)
    if previews:
        preview_tokens = _tokens(cfg, preview_frames, height, width, vae_spatial_factor(base_dir))
        video = 3 * preview_frames * height * width * 4
        work = max(forward_work(1, preview_tokens), VAE_DECODE * unit + video)
        phases["previews"] = resident + lora_state + te_bytes + vae_bytes + work
    phases = {k: v / GB for k, v in phases.items()}
    peak_phase = max(phases, key=phases.get)
    linear = sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
    layers = cfg["num_layers"]
    fwd = batch * (2 * linear * tokens + layers * 4 * d * (tokens**2 + tokens * text_tokens))
    flops = fwd * (3 if grad_checkpointing else 2)
    if prior_preservation:  # the trained pass on class prompts (+ the base's no-grad forward)
        flops += fwd * (3 if grad_checkpointing else 2) + (fwd if prior_source == "photos" else 0)
    rate = matmul_tflops or measured_matmul_tflops()
    passes = 2 + (1 if prior_preservation and prior_source == "photos" else 0)
    transfer = moved * passes / H2D_BYTES_PER_S  # forward, recompute (and the teacher's)
    host = full * (2 if _two_experts(base_dir) else 1) + te["params"] * b + vae_bytes
    return Estimate(
        params_total=n_params,
        params_lora=n_lora,
        tokens_per_sample=tokens,
        weights_gb=resident / GB,
        lora_state_gb=lora_state / GB,
        activations_gb=acts / GB,
        peak_gb=phases[peak_phase],
        flops_per_step=flops,
        seconds_per_step=flops / (rate * 1e12) + transfer,
        matmul_tflops=rate,
        phases=phases,
        peak_phase=peak_phase,
        host_gb=host / GB,
        transfer_s_per_step=transfer,
        notes=notes,
    )


def _two_experts(base_dir: Path) -> bool:
    index = json.loads((Path(base_dir) / "model_index.json").read_text())
    return (index.get("transformer_2") or [None])[0] is not None


# What `advise` tries when a run does not fit; the fastest that fits wins.
REMEDIES = [
    ({"grad_checkpointing": True}, "--grad-checkpointing"),
    ({"fp8": True}, "--fp8-base"),
    ({"offload": "block"}, "--offload block"),
    ({"fp8": True, "offload": "block"}, "--fp8-base --offload block"),
    ({"fp8": True, "offload": "leaf"}, "--fp8-base --offload leaf"),
    (
        {"fp8": True, "offload": "block", "previews": False},
        "--fp8-base --offload block --validate-every -1",
    ),
]


@dataclass
class Advice:
    """Whether a run fits a card, and the fastest remedy that makes it fit."""

    gpu_gb: float
    fits: bool
    estimate: Estimate
    remedy: str | None = None
    remedy_estimate: Estimate | None = None

    def format(self) -> str:
        budget = f"{self.gpu_gb:g} GB card ({USABLE:.0%} usable)"
        if self.fits:
            return (
                f"fits a {budget}: peak {self.estimate.peak_gb:.1f} GB ({self.estimate.peak_phase})"
            )
        head = f"does not fit a {budget}: peak {self.estimate.peak_gb:.1f} GB ({self.estimate.peak_phase})"
        if self.remedy is None:
            return (
                head
                + "; no setting here makes it fit: fewer frames, a smaller size or a larger card"
            )
        e = self.remedy_estimate
        return f"{head}; fits with {self.remedy} (peak {e.peak_gb:.1f} GB, {e.seconds_per_step:.2f} s/step)"


def advise(base_dir: Path, gpu_gb: float, **settings) -> Advice:
    """``estimate(base_dir, **settings)`` against a card of ``gpu_gb`` GB, and if it does not
    fit, the fastest of ``REMEDIES`` that does (settings already on are kept)."""
    e = estimate(base_dir, **settings)
    if e.peak_gb <= USABLE * gpu_gb:
        return Advice(gpu_gb, True, e)
    fitting = []
    for change, flags in REMEDIES:
        trial = {**settings, **change}
        if trial != settings and (r := estimate(base_dir, **trial)).peak_gb <= USABLE * gpu_gb:
            fitting.append((r.seconds_per_step, len(fitting), flags, r))
    if not fitting:
        return Advice(gpu_gb, False, e)
    _, _, flags, r = min(fitting, key=lambda t: t[:2])  # ties: the earlier in REMEDIES
    return Advice(gpu_gb, False, e, flags, r)


def to_json(e: Estimate | Advice) -> str:
    return json.dumps(asdict(e), indent=1)
