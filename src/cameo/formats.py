"""Wan LoRA key formats, as pure state-dict converters with a coverage report.

- ``diffusers`` (cameo's native): ``transformer.blocks.N.attn1.to_q.lora_A.weight``; alpha in the
  PEFT config metadata.
- ``comfyui`` (original Wan module names, which ComfyUI loads):
  ``diffusion_model.blocks.N.self_attn.q.lora_A.weight`` plus ``...self_attn.q.alpha``.
- ``kohya`` (musubi-tuner / sd-scripts): ``lora_unet_blocks_N_self_attn_q.lora_down.weight``,
  ``.lora_up.weight`` and ``.alpha``.

Every conversion goes through one canonical form, {module: (A, B, alpha)} with diffusers module
paths, and fails if any key would be dropped or cannot be placed. Files are read and written by
``cameo.lora_files``; nothing here touches the disk.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

import torch

FORMATS = ("diffusers", "comfyui", "kohya")
PEFT_METADATA_KEY = "lora_adapter_metadata"  # what diffusers reads to rebuild the LoraConfig

# diffusers module suffix <-> original Wan module suffix
_MODULES = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.add_k_proj": "cross_attn.k_img",
    "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
_TO_DIFFUSERS = {v: k for k, v in _MODULES.items()}


class ConversionError(ValueError):
    """A key could not be placed, or would be dropped."""


@dataclass
class Module:
    down: torch.Tensor  # A, (r, in)
    up: torch.Tensor  # B, (out, r)
    alpha: float


@dataclass
class Coverage:
    source_format: str
    target_format: str
    keys_in: int
    modules: int
    keys_out: int
    files: list[str] = field(default_factory=list)  # what a conversion wrote

    def format(self) -> str:
        return (
            f"{self.source_format} -> {self.target_format}: {self.keys_in} keys in, "
            f"{self.modules} LoRA modules, {self.keys_out} keys out, 0 dropped"
        )


def detect_format(sd: dict[str, torch.Tensor]) -> str:
    keys = list(sd)
    if keys and all(k.startswith("transformer.") for k in keys):
        return "diffusers"
    if keys and all(k.startswith("diffusion_model.") for k in keys):
        return "comfyui"
    if keys and all(k.startswith("lora_unet_") for k in keys):
        return "kohya"
    prefixes = sorted({k.split(".", 1)[0].split("_blocks")[0] for k in keys})[:5]
    if prefixes == ["transformer", "transformer_2"]:
        raise ConversionError(
            "this LoRA adapts both Wan 2.2 experts (transformer. and transformer_2. keys); use "
            "its halves, NAME_high_noise.safetensors and NAME_low_noise.safetensors"
        )
    raise ConversionError(f"not a Wan LoRA in a known format (key prefixes: {prefixes})")


def _peft_config(meta: dict[str, str] | None) -> dict:
    """The transformer's LoraConfig fields from diffusers' PEFT config metadata ({} if none)."""
    if not meta or not meta.get(PEFT_METADATA_KEY):
        return {}
    try:
        packed = json.loads(meta[PEFT_METADATA_KEY])
    except json.JSONDecodeError as e:
        raise ConversionError(f"the {PEFT_METADATA_KEY} metadata is not JSON ({e})") from None
    if not isinstance(packed, dict):
        raise ConversionError(f"the {PEFT_METADATA_KEY} metadata is not a JSON object")
    return {k.split(".", 1)[1]: v for k, v in packed.items() if k.startswith("transformer.")}


def _peft_alphas(
    meta: dict[str, str] | None, modules: list[str], ranks: dict[str, int]
) -> dict[str, float]:
    """Per-module alpha from diffusers' PEFT config metadata (alpha = rank when absent)."""
    cfg = _peft_config(meta)
    try:
        base = cfg.get("lora_alpha")
        pattern = dict(cfg.get("alpha_pattern") or {})
        out = {}
        for m in modules:
            hit = next(
                (v for pat, v in pattern.items() if m.endswith(pat) or re.fullmatch(pat, m)), None
            )
            out[m] = float(hit if hit is not None else (base if base is not None else ranks[m]))
            if cfg.get("use_rslora"):
                # rsLoRA scales by alpha/sqrt(r); keep the product alpha/r fixed for other tools.
                out[m] = out[m] * ranks[m] / ranks[m] ** 0.5
    except (TypeError, ValueError, re.error) as e:
        raise ConversionError(
            f"the {PEFT_METADATA_KEY} metadata has a malformed alpha ({e})"
        ) from None
    return out


def to_canonical(
    sd: dict[str, torch.Tensor], meta: dict[str, str] | None = None
) -> tuple[dict[str, Module], str]:
    """Any supported format -> {diffusers module path: Module}. Raises on unplaceable keys."""
    fmt = detect_format(sd)
    parts: dict[str, dict[str, torch.Tensor]] = {}
    unplaced = []
    for key, value in sd.items():
        placed = _split_key(key, fmt)
        if placed is None:
            unplaced.append(key)
            continue
        module, kind = placed
        parts.setdefault(module, {})[kind] = value
    if unplaced:
        raise ConversionError(f"{len(unplaced)} keys match no Wan LoRA module, e.g. {unplaced[:3]}")
    incomplete = [m for m, p in parts.items() if "down" not in p or "up" not in p]
    if incomplete:
        raise ConversionError(
            f"{len(incomplete)} modules lack their down or up matrix, e.g. {incomplete[:3]}"
        )
    for m, p in parts.items():
        if p["down"].dim() != 2 or p["up"].dim() != 2 or p["down"].shape[0] != p["up"].shape[1]:
            raise ConversionError(
                f"{m}: down {tuple(p['down'].shape)} and up {tuple(p['up'].shape)} are not "
                "the two matrices of one low-rank change"
            )
        if "alpha" in p and p["alpha"].numel() != 1:
            raise ConversionError(f"{m}: alpha has {p['alpha'].numel()} values, not one")
    ranks = {m: p["down"].shape[0] for m, p in parts.items()}
    peft_alpha = _peft_alphas(meta, list(parts), ranks) if fmt == "diffusers" else {}
    modules = {}
    for m, p in parts.items():
        if fmt == "kohya" and not (p["down"].any() or p["up"].any()):
            continue  # kohya padding (``_with_every_required_module``): changes nothing
        alpha = float(p["alpha"].item()) if "alpha" in p else peft_alpha.get(m, float(ranks[m]))
        modules[m] = Module(p["down"], p["up"], alpha)
    return modules, fmt


def _split_key(key: str, fmt: str) -> tuple[str, str] | None:
    """A key -> (diffusers module path, 'down' | 'up' | 'alpha')."""
    if fmt == "diffusers":
        m = re.fullmatch(r"transformer\.(.+)\.lora_(A|B)\.weight", key)
        return (m.group(1), "down" if m.group(2) == "A" else "up") if m else None
    if fmt == "comfyui":
        m = re.fullmatch(
            r"diffusion_model\.(blocks\.\d+)\.(.+?)\.(lora_A\.weight|lora_B\.weight|lora_down\.weight|lora_up\.weight|alpha)",
            key,
        )
        if not m or m.group(2) not in _TO_DIFFUSERS:
            return None
        kind = {
            "lora_A.weight": "down",
            "lora_down.weight": "down",
            "lora_B.weight": "up",
            "lora_up.weight": "up",
            "alpha": "alpha",
        }[m.group(3)]
        return f"{m.group(1)}.{_TO_DIFFUSERS[m.group(2)]}", kind
    m = re.fullmatch(
        r"lora_unet_blocks_(\d+)_(.+?)\.(lora_down\.weight|lora_up\.weight|alpha)", key
    )
    if not m:
        return None
    wan = next((w for w in _TO_DIFFUSERS if w.replace(".", "_") == m.group(2)), None)
    if wan is None:
        return None
    kind = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}[m.group(3)]
    return f"blocks.{m.group(1)}.{_TO_DIFFUSERS[wan]}", kind


def from_canonical(
    modules: dict[str, Module], fmt: str, shapes: dict[str, tuple[int, int]] | None = None
) -> dict[str, torch.Tensor]:
    """{diffusers module path: Module} -> a state dict in ``fmt`` (alpha kept exactly).

    ``shapes`` ({module suffix: (out_features, in_features)}, see ``layer_shapes``) gives the
    base model's layers; the kohya format needs them when the LoRA leaves the feed-forward alone."""
    if fmt not in FORMATS:
        raise ConversionError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    out: dict[str, torch.Tensor] = {}
    if fmt == "kohya":
        modules = _with_every_required_module(modules, shapes or {})
    for path, mod in modules.items():
        m = re.fullmatch(r"(blocks\.\d+)\.(.+)", path)
        if not m or m.group(2) not in _MODULES:
            raise ConversionError(f"module {path} has no {fmt} name")
        block, name = m.group(1), m.group(2)
        alpha = torch.tensor(mod.alpha, dtype=torch.float32)
        if fmt == "diffusers":
            out[f"transformer.{path}.lora_A.weight"] = mod.down
            out[f"transformer.{path}.lora_B.weight"] = mod.up
        elif fmt == "comfyui":
            stem = f"diffusion_model.{block}.{_MODULES[name]}"
            out.update(
                {
                    f"{stem}.lora_A.weight": mod.down,
                    f"{stem}.lora_B.weight": mod.up,
                    f"{stem}.alpha": alpha,
                }
            )
        else:
            stem = f"lora_unet_{block.replace('.', '_')}_{_MODULES[name].replace('.', '_')}"
            out.update(
                {
                    f"{stem}.lora_down.weight": mod.down,
                    f"{stem}.lora_up.weight": mod.up,
                    f"{stem}.alpha": alpha,
                }
            )
    return out


_ATTENTION = [k for k in _MODULES if k.startswith(("attn1.", "attn2.to_"))]
_FFN = ["ffn.net.0.proj", "ffn.net.2"]
_IMAGE = ["attn2.add_k_proj", "attn2.add_v_proj"]


def layer_shapes(config: dict) -> dict[str, tuple[int, int]]:
    """{module suffix: (out_features, in_features)} of a Wan transformer, from its config
    (``transformer/config.json``): every attention projection is dim x dim, the feed-forward
    dim -> ffn_dim -> dim, and the image keys and values of image-to-video models read
    ``added_kv_proj_dim`` features."""
    dim = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    ffn = int(config["ffn_dim"])
    shapes = {name: (dim, dim) for name in _ATTENTION}
    shapes.update({"ffn.net.0.proj": (ffn, dim), "ffn.net.2": (dim, ffn)})
    if config.get("added_kv_proj_dim"):
        shapes.update({name: (dim, int(config["added_kv_proj_dim"])) for name in _IMAGE})
    return shapes


def _with_every_required_module(
    modules: dict[str, Module], shapes: dict[str, tuple[int, int]]
) -> dict[str, Module]:
    """diffusers' reader of kohya/musubi Wan LoRAs (``_convert_musubi_wan_lora_to_diffusers``)
    counts the distinct blocks in the file, n, and then requires in each of blocks 0 to n-1 all
    eight attention projections (q, k, v, o of self- and cross-attention), both feed-forward
    layers, and the image keys and values if any block has them; a file that adapts fewer fails
    there with a KeyError. The missing ones, in every block up to the last the LoRA adapts, are
    added as all-zero pairs (ΔW = B A = 0 exactly; ``to_canonical`` drops them again) at the
    LoRA's own rank: with one rank throughout, readers that take a single scale from the most
    common rank keep the real modules' scale."""
    if not modules:
        return modules
    found: dict[str, tuple[int, int]] = {}
    blocks = set()
    for path, mod in modules.items():
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", path)
        if m:
            blocks.add(int(m.group(1)))
            found.setdefault(m.group(2), (mod.up.shape[0], mod.down.shape[1]))
    known = {**shapes, **found}
    attention = next((known[n] for n in _ATTENTION if n in known), None)
    if attention is not None:  # Wan's attention projections are all dim x dim
        known = {**{n: attention for n in _ATTENTION}, **known}
    required = _ATTENTION + _FFN + ([*_IMAGE] if any(n in found for n in _IMAGE) else [])
    unknown = [n for n in required if n not in known]
    if unknown:
        raise ConversionError(
            f"the kohya format needs every block's {', '.join(unknown)}, which this LoRA does not "
            "adapt, and their sizes are unknown: give the base model it was trained on"
        )
    rank = Counter(mod.down.shape[0] for mod in modules.values()).most_common(1)[0][0]
    like = next(iter(modules.values()))
    out = dict(modules)
    for block in range(max(blocks) + 1) if blocks else []:
        for name in required:
            features_out, features_in = known[name]
            out.setdefault(
                f"blocks.{block}.{name}",
                Module(
                    like.down.new_zeros(rank, features_in),
                    like.up.new_zeros(features_out, rank),
                    float(rank),
                ),
            )
    return out


def peft_metadata(modules: dict[str, Module]) -> dict[str, str]:
    """diffusers' PEFT config metadata for canonical modules (rank/alpha patterns if mixed)."""
    ranks = {m: mod.down.shape[0] for m, mod in modules.items()}
    alphas = {m: mod.alpha for m, mod in modules.items()}
    r = max(set(ranks.values()), key=list(ranks.values()).count)
    a = max(set(alphas.values()), key=list(alphas.values()).count)
    cfg = {
        "r": r,
        "lora_alpha": a,
        "target_modules": sorted({m.split(".", 2)[2] for m in modules}),
        "rank_pattern": {m: v for m, v in ranks.items() if v != r},
        "alpha_pattern": {m: v for m, v in alphas.items() if v != a},
        "use_rslora": False,
        "lora_dropout": 0.0,
        "bias": "none",
        "init_lora_weights": True,
    }
    return {
        PEFT_METADATA_KEY: json.dumps(
            {f"transformer.{k}": v for k, v in cfg.items()}, indent=2, sort_keys=True
        )
    }


def convert_state_dict(
    sd: dict[str, torch.Tensor],
    to: str,
    meta: dict[str, str] | None = None,
    shapes: dict[str, tuple[int, int]] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, str], Coverage]:
    """Convert a Wan LoRA state dict to ``to``; returns (state dict, metadata, coverage).
    ``shapes``: the base model's layers, as in ``from_canonical``."""
    modules, src = to_canonical(sd, meta)
    out = from_canonical(modules, to, shapes)
    new_meta = {k: v for k, v in (meta or {}).items() if k.startswith("cameo.")}
    if to == "diffusers":
        new_meta.update(peft_metadata(modules))
    new_meta["format"] = "pt"
    return out, new_meta, Coverage(src, to, len(sd), len(modules), len(out))
