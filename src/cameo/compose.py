"""Several people in one video: LoRA analysis, merging, orthogonal slots and regional masks.

All functions work on the canonical form of ``cameo.formats`` ({module: Module(A, B, alpha)}),
so they accept files in any supported key format. ΔW = (alpha / r) · B · A per module.

- ``inspect``: per-module norm of ΔW, singular spectrum, effective rank at 90 % / 99 % energy;
  for two files the principal angles between their ΔW subspaces and an interference score.
- ``resize``: SVD truncation of ΔW to rank r, with the energy kept.
- ``merge``: ``linear`` and ``cat`` (exact sum, ranks concatenated), ``svd`` (sum, truncated),
  ``ties`` and ``dare_linear`` (PEFT's merge utilities on ΔW, Yadav et al. 2023; Yu et al. 2024).
- orthogonal slots (after Po et al., CVPR 2024, "Orthogonal Adaptation"): person k's A is rows
  [k·r, (k+1)·r) of a seeded orthogonal basis of each layer's input space, frozen; only B trains.
  Two people in different slots have A_i A_jᵀ = 0, so their ΔW can simply be summed.
- regional masks: each adapter acts only on its region's video tokens and on its trigger's text
  tokens, through forward hooks on the PEFT ``lora_B`` modules.
- windows (after MultiDiffusion, Bar-Tal et al., ICML 2023): each person is denoised in a window
  of their own, at the single-person size the model knows, with only their adapter and their
  own prompt; the windows' predictions replace the full canvas's inside them, feathered at the
  seams, so no face is drawn by two adapters or read from two prompts.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from peft.utils import merge_utils

from .formats import Module, from_canonical, peft_metadata, to_canonical
from .lora_files import read_lora_file, write_safetensors


def load_modules(path: Path) -> tuple[dict[str, Module], dict[str, str]]:
    sd, meta = read_lora_file(Path(path))
    return to_canonical(sd, meta)[0], meta


def delta(mod: Module) -> torch.Tensor:
    """ΔW = (alpha / r) · B · A, (out, in)."""
    return (mod.alpha / mod.down.shape[0]) * (mod.up.float() @ mod.down.float())


def effective_rank(s: torch.Tensor, energy: float) -> int:
    """Smallest k whose top-k singular values hold ``energy`` of the squared total."""
    e = (s**2).cumsum(0) / (s**2).sum().clamp_min(1e-30)
    return int((e < energy).sum().item()) + 1


def inspect_modules(modules: dict[str, Module]) -> list[dict]:
    rows = []
    for name, mod in sorted(modules.items()):
        s = torch.linalg.svdvals(delta(mod))
        rows.append(
            {
                "module": name,
                "rank": mod.down.shape[0],
                "norm": float(s.norm()),
                "rank90": effective_rank(s, 0.90),
                "rank99": effective_rank(s, 0.99),
                "spectrum": [round(float(v), 6) for v in s[: mod.down.shape[0]]],
            }
        )
    return rows


def recommended_rank(rows: list[dict]) -> int:
    """The 99 %-energy rank of the layer that needs most, rounded up to a power of two."""
    need = max(r["rank99"] for r in rows)
    return 2 ** math.ceil(math.log2(max(need, 1)))


def principal_cosines(a: torch.Tensor, b: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """Cosines of the principal angles between the column spaces of a and b (top-k each)."""
    ua = torch.linalg.svd(a, full_matrices=False)[0]
    ub = torch.linalg.svd(b, full_matrices=False)[0]
    if k is not None:
        ua, ub = ua[:, :k], ub[:, :k]
    return torch.linalg.svdvals(ua.T @ ub).clamp(0, 1)


def overlap(ma: dict[str, Module], mb: dict[str, Module]) -> list[dict]:
    """Per shared module: principal-angle cosines between the two ΔW's input (row) spaces and
    output (column) spaces, and an interference score: the mean squared cosine of the input
    spaces weighted by both norms (0 = the two changes read disjoint directions)."""
    rows = []
    for name in sorted(set(ma) & set(mb)):
        da, db = delta(ma[name]), delta(mb[name])
        ra, rb = ma[name].down.shape[0], mb[name].down.shape[0]
        cin = principal_cosines(da.T, db.T, min(ra, rb))
        cout = principal_cosines(da, db, min(ra, rb))
        rows.append(
            {
                "module": name,
                "input_cos_max": float(cin.max()),
                "output_cos_max": float(cout.max()),
                "interference": float((cin**2).mean()),
                "weight": float(da.norm() * db.norm()),
            }
        )
    return rows


def interference_score(rows: list[dict]) -> float:
    w = sum(r["weight"] for r in rows)
    return sum(r["interference"] * r["weight"] for r in rows) / max(w, 1e-30)


def truncate(d: torch.Tensor, rank: int) -> tuple[Module, float]:
    """Best rank-r factorisation of ΔW (Eckart-Young) as a Module with alpha = r, and the
    fraction of squared energy it keeps."""
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    r = min(rank, len(s))
    root = s[:r].sqrt()
    mod = Module(
        down=(root[:, None] * vh[:r]).contiguous(),
        up=(u[:, :r] * root[None]).contiguous(),
        alpha=float(r),
    )
    kept = float((s[:r] ** 2).sum() / (s**2).sum().clamp_min(1e-30))
    return mod, kept


def resize(modules: dict[str, Module], rank: int) -> tuple[dict[str, Module], float]:
    """Every module truncated to ``rank``; returns the modules and the overall energy kept."""
    out, kept_e, total_e = {}, 0.0, 0.0
    for name, mod in modules.items():
        d = delta(mod)
        out[name], frac = truncate(d, rank)
        e = float((d**2).sum())
        kept_e, total_e = kept_e + frac * e, total_e + e
    return out, kept_e / max(total_e, 1e-30)


MERGES = ("linear", "cat", "svd", "ties", "dare_linear")
MIXES = (*MERGES, "regional", "windows")  # every --mix of cameo generate
TEXT_SIDE = (
    "attn2.to_k",
    "attn2.to_v",
    "attn2.add_k_proj",
    "attn2.add_v_proj",
)  # layers fed the prompt


def merge(
    loras: list[dict[str, Module]],
    weights: list[float],
    method: str,
    density: float = 0.5,
    rank: int | None = None,
    seed: int = 0,
) -> dict[str, Module]:
    """Merge several LoRAs into one. ``linear``/``cat`` are exact (ranks concatenated, each B
    scaled by its weight); ``svd``, ``ties`` and ``dare_linear`` combine ΔW and refactor it to
    ``rank`` (default: the sum of the input ranks)."""
    if method not in MERGES:
        raise ValueError(f"unknown merge {method!r}; choose from {', '.join(MERGES)}")

    names = sorted(set().union(*loras))
    out = {}
    torch.manual_seed(seed)  # dare's random pruning
    for name in names:
        present = [(lo[name], w) for lo, w in zip(loras, weights, strict=True) if name in lo]
        if method in ("linear", "cat"):
            downs = [m.down.float() * math.sqrt(m.alpha / m.down.shape[0]) for m, _ in present]
            ups = [m.up.float() * math.sqrt(m.alpha / m.down.shape[0]) * w for m, w in present]
            r = sum(d.shape[0] for d in downs)
            out[name] = Module(torch.cat(downs, 0), torch.cat(ups, 1), float(r))
            continue
        deltas = [delta(m) for m, _ in present]
        w = torch.tensor([w for _, w in present], dtype=torch.float32)
        if method == "svd":
            combined = sum(wi * d for wi, d in zip(w.tolist(), deltas, strict=True))
        elif method == "ties":
            combined = merge_utils.ties(deltas, w, density)
        else:
            combined = merge_utils.dare_linear(deltas, w, density)
        target = rank or sum(m.down.shape[0] for m, _ in present)
        out[name] = truncate(combined, target)[0]
    return out


def save_modules(path: Path, modules: dict[str, Module], meta: dict[str, str]) -> Path:
    sd = from_canonical(modules, "diffusers")
    keep = {k: v for k, v in meta.items() if k.startswith("cameo.")}
    return write_safetensors(path, sd, {**keep, **peft_metadata(modules), "format": "pt"})


# ------------------------------------------------------------------ orthogonal adaptation


def orthogonal_basis(in_features: int, module: str, seed: int) -> torch.Tensor:
    """A seeded random orthogonal (in, in) matrix for one layer, the same on every machine."""
    h = int.from_bytes(hashlib.sha256(f"{seed}/{module}".encode()).digest()[:8], "little")
    g = torch.Generator().manual_seed(h)
    q, r = torch.linalg.qr(torch.randn(in_features, in_features, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()  # sign fix: a unique Q for the seed


def set_orthogonal_down(
    transformer, slot: int, rank: int, seed: int, adapter: str = "default"
) -> None:
    """Freeze every lora_A of ``adapter`` to rows [slot*r, (slot+1)*r) of its layer's basis,
    scaled to PEFT's default init norm so learning rates carry over."""
    for name, module in transformer.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or adapter not in lora_a:
            continue
        weight = lora_a[adapter].weight  # (r, in)
        k = weight.shape[1]
        if (slot + 1) * rank > k:
            raise ValueError(
                f"slot {slot} with rank {rank} needs {(slot + 1) * rank} input directions; {name} has {k}"
            )
        basis = orthogonal_basis(k, name.removeprefix("base_model.model."), seed)
        with (
            torch.no_grad()
        ):  # unit rows / sqrt(3): the entry scale of PEFT's kaiming init, 1/sqrt(3k)
            weight.copy_(basis[slot * rank : (slot + 1) * rank] / math.sqrt(3))
        weight.requires_grad_(False)


def check_slots(metas: list[dict[str, str]]) -> None:
    """Refuse to sum orthogonal LoRAs that share a slot of the same basis."""
    seen: dict[tuple[str, str], int] = {}
    for i, m in enumerate(metas):
        if "cameo.orthogonal_slot" not in m:
            continue
        key = (m.get("cameo.orthogonal_seed", "0"), m["cameo.orthogonal_slot"])
        if key in seen:
            raise ValueError(
                f"LoRAs {seen[key]} and {i} use the same orthogonal slot {key[1]}: their changes would collide"
            )
        seen[key] = i


# --------------------------------------------------------------------------- regional masks


REGION_BOXES = {
    "left": (0.0, 0.0, 0.5, 1.0),
    "right": (0.5, 0.0, 1.0, 1.0),
    "top": (0.0, 0.0, 1.0, 0.5),
    "bottom": (0.0, 0.5, 1.0, 1.0),
    "all": (0.0, 0.0, 1.0, 1.0),
}


def region_box(
    region: str | tuple[float, float, float, float],
) -> tuple[float, float, float, float]:
    """A named region ('left', ...) or a box, as (x0, y0, x1, y1) in [0, 1] of the frame."""
    return REGION_BOXES[region] if isinstance(region, str) else region


def region_token_mask(
    region: str | tuple[float, float, float, float], frames: int, height: int, width: int
) -> torch.Tensor:
    """Video-token mask (F' * h * w,) of a region: 'left', 'right', 'top', 'bottom', 'all', or a
    box (x0, y0, x1, y1) in [0, 1] of the frame. Tokens are ordered frame, row, column, as the
    Wan transformer flattens its patches."""
    ys = (torch.arange(height) + 0.5) / height
    xs = (torch.arange(width) + 0.5) / width
    x0, y0, x1, y1 = region_box(region)
    m2 = (
        (ys[:, None] >= y0) & (ys[:, None] < y1) & (xs[None] >= x0) & (xs[None] < x1)
    ).float()  # (h, w)
    return m2.flatten().repeat(frames)


def trigger_token_mask(tokenizer, prompt: str, trigger: str, length: int) -> torch.Tensor:
    """Text-token mask (length,) of the positions of ``trigger``'s word pieces in ``prompt``."""
    ids = tokenizer(
        prompt, padding="max_length", max_length=length, truncation=True, add_special_tokens=True
    )["input_ids"]
    want = tokenizer(trigger, add_special_tokens=False)["input_ids"]
    mask = torch.zeros(length)
    for i in range(len(ids) - len(want) + 1):
        if ids[i : i + len(want)] == want:
            mask[i : i + len(want)] = 1
    return mask


@contextlib.contextmanager
def regional(transformer, masks: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
    """While active, adapter ``name``'s output is multiplied per token by its text mask in the
    layers that read the prompt (cross-attention keys and values) and by its video mask in all
    others (they read video tokens).

    masks: {adapter: (video_mask (T_video,), text_mask (T_text,))}.
    """
    handles = []

    def hook_for(mask: torch.Tensor, where: str):
        def hook(module, inputs, output):  # output (B, T, out)
            if output.shape[1] != mask.numel():
                raise RuntimeError(
                    f"regional LoRA: {where} has {output.shape[1]} tokens, its mask {mask.numel()}"
                )
            return output * mask.to(output.dtype).to(output.device).view(1, -1, 1)

        return hook

    for name, module in transformer.named_modules():
        lora_b = getattr(module, "lora_B", None)
        if lora_b is None:
            continue
        reads_text = name.endswith(TEXT_SIDE)
        for adapter, (video, text) in masks.items():
            if adapter in lora_b:
                mask = text if reads_text else video
                handles.append(lora_b[adapter].register_forward_hook(hook_for(mask, name)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------- regional prompts


def regional_text_mask(regions: list[torch.Tensor], text_len: int) -> torch.Tensor:
    """Which text tokens each video token may attend to when the prompt is the main prompt
    followed by one prompt per region, each ``text_len`` tokens long: a token inside region i
    reads prompt i (a token in two regions reads both), a token in none reads the main prompt.

    regions: video-token masks (N,) as ``region_token_mask`` makes them; returns (N, (1+R)·T)
    bool."""
    inside = torch.stack([r > 0 for r in regions])  # (R, N)
    main = ~inside.any(0)  # (N,)
    per_prompt = torch.cat([main[None], inside])  # (1+R, N)
    return per_prompt.repeat_interleave(text_len, dim=0).T.contiguous()  # (N, (1+R)·T)


class _MaskedCrossAttention:
    """A cross-attention processor that runs the model's own processor with a fixed attention
    mask (the Wan block passes none to its cross-attention)."""

    def __init__(self, inner, mask: torch.Tensor):
        self.inner, self.mask = inner, mask

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None
    ):
        n, t = hidden_states.shape[1], encoder_hidden_states.shape[1]
        if self.mask.shape != (n, t):
            raise RuntimeError(
                f"regional prompts: {n} video and {t} text tokens, the mask is {tuple(self.mask.shape)}"
            )
        mask = self.mask.to(hidden_states.device)
        return self.inner(attn, hidden_states, encoder_hidden_states, mask, rotary_emb)


@contextlib.contextmanager
def regional_prompts(transformer, mask: torch.Tensor) -> Iterator[None]:
    """While active, every cross-attention of ``transformer`` attends with ``mask``
    (``regional_text_mask``): each region's video tokens read only their own prompt, so that
    one person's words do not shape the other's face (Mix-of-Show's regional sampling)."""
    saved = []
    for block in transformer.blocks:
        attn = block.attn2
        if getattr(attn, "add_k_proj", None) is not None:
            raise ValueError("regional prompts are for text-to-video models (no image keys)")
        saved.append((attn, attn.processor))
        attn.set_processor(_MaskedCrossAttention(attn.processor, mask))
    try:
        yield
    finally:
        for attn, processor in saved:
            attn.set_processor(processor)


# --------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """One person's window of the latent canvas, drawn by one adapter reading one prompt.

    rows, cols: [start, end) in latent pixels; prompt: which text chunk it reads (0 = the main
    prompt, i = the i-th region prompt)."""

    adapter: str
    rows: tuple[int, int]
    cols: tuple[int, int]
    prompt: int = 0


def region_span(lo: float, hi: float, tokens: int, patch: int) -> tuple[int, int]:
    """Latent [start, end) of the tokens whose centres lie in [lo, hi) of a side of ``tokens``
    patches of ``patch`` latent pixels (the tokens ``region_token_mask`` selects)."""
    centres = (torch.arange(tokens) + 0.5) / tokens
    inside = torch.nonzero((centres >= lo) & (centres < hi)).flatten()
    if inside.numel() == 0:
        raise ValueError(f"the region [{lo:g}, {hi:g}) holds no video token")
    return int(inside[0]) * patch, (int(inside[-1]) + 1) * patch


def window_weights(window: Window, height: int, width: int, feather: int) -> torch.Tensor:
    """(height, width) weight of a window's prediction: 1 inside, ramping to 0 over ``feather``
    latent pixels at each edge that lies inside the canvas (not at its border), 0 outside."""

    def ramp(start: int, end: int, size: int) -> torch.Tensor:
        x = torch.arange(size, dtype=torch.float32)
        w = ((x >= start) & (x < end)).float()
        if feather > 0:
            if start > 0:
                w = w * ((x - start + 1) / (feather + 1)).clamp(max=1)
            if end < size:
                w = w * ((end - x) / (feather + 1)).clamp(max=1)
        return w

    return ramp(*window.rows, height)[:, None] * ramp(*window.cols, width)[None, :]


@contextlib.contextmanager
def adapter_alone(transformer, names: list[str]) -> Iterator[Callable[[str | None], None]]:
    """While active, ``use(name)`` lets adapter ``name`` alone act (``use(None)``: none of
    ``names``) until the next call. It sets each layer's PEFT ``scaling`` of the others to 0
    rather than hooking their outputs, so the fast path (``cameo.models.fast``), which reads the
    scalings, runs the windows too; the scalings are restored on exit."""
    layers = [
        (scaling, name, scaling[name])
        for module in transformer.modules()
        if isinstance(scaling := getattr(module, "scaling", None), dict)
        for name in names
        if name in scaling
    ]

    def use(adapter: str | None) -> None:
        for scaling, name, scale in layers:
            scaling[name] = scale if name == adapter else 0.0

    try:
        yield use
    finally:
        for scaling, name, scale in layers:
            scaling[name] = scale


@contextlib.contextmanager
def window_denoising(
    transformer, windows: list[Window], text_len: int, feather: int = 2
) -> Iterator[None]:
    """While active, each call of ``transformer`` predicts the full canvas with no adapter and
    the main prompt, then each window on its own crop of the latents with its adapter alone and
    its own prompt, and blends: inside a window its prediction, feathered into the canvas's.

    The text passed to the transformer is the main prompt followed by the region prompts,
    (B, (1+R)·text_len, D), as ``generate`` builds it; the unconditional pass gets the negative
    prompt repeated to the same length, so it is windowed alike."""
    original = transformer.forward
    names = sorted({w.adapter for w in windows})

    def forward(hidden_states, timestep, encoder_hidden_states, *args, return_dict=True, **kw):
        # hidden_states (B, C, F, h, w); encoder_hidden_states (B, (1+R)·T, D)
        if timestep.dim() != 1:
            raise ValueError("--mix windows needs one timestep per clip (not Wan 2.2 TI2V)")

        def text(i: int) -> torch.Tensor:
            return encoder_hidden_states[:, i * text_len : (i + 1) * text_len]

        def run(x: torch.Tensor, i: int, adapter: str | None) -> torch.Tensor:
            use(adapter)
            return original(x, timestep, text(i), *args, return_dict=False, **kw)[0]

        h, w = hidden_states.shape[-2:]
        full = run(hidden_states, 0, None)
        total = torch.zeros(h, w, device=full.device)
        blended = torch.zeros_like(full)
        for win in windows:
            (r0, r1), (c0, c1) = win.rows, win.cols
            weight = window_weights(win, h, w, feather).to(full.device)  # (h, w)
            pred = run(hidden_states[..., r0:r1, c0:c1], win.prompt, win.adapter)
            blended[..., r0:r1, c0:c1] += weight[r0:r1, c0:c1] * pred
            total += weight
        rest = (1 - total).clamp(min=0)  # the canvas's own share, where windows do not reach
        out = ((blended + rest * full) / (total + rest).clamp(min=1e-6)).to(full.dtype)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    saved = transformer.__dict__.get("forward")  # an instance-level forward someone set
    with adapter_alone(transformer, names) as use:
        transformer.forward = forward
        try:
            yield
        finally:
            if saved is None:
                del transformer.forward  # back to the class's forward
            else:
                transformer.forward = saved
