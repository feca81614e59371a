"""LoRA on the Wan transformer, through PEFT and diffusers; only what they lack is written here.

ΔW = B·A with A (r × k), B (d × r); a layer computes W x + s · (α / r) · B A x (α / √r with
rsLoRA, Kalajdzievski 2023). PEFT injects and trains the layers; diffusers loads and mixes them at
generation. cameo adds: a file writer that keeps the diffusers key layout and PEFT config
metadata (so stock ``WanPipeline.load_lora_weights`` reads the right alpha) plus cameo's own
metadata (trigger, base model hash, training config, metrics), and a strict reader.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

# The default: all of self-attention, and of cross-attention only the keys and values made from
# the text. The cross-attention query and output act on every prompt alike, and adapting them
# moved unrelated prompts towards the person; without them, over 5 held-out people, leakage fell
# from +0.052 to +0.043 and identification rose from 0.55 to 0.65 (docs/quality.md).
DEFAULT_TARGETS = "attn1.to_q,attn1.to_k,attn1.to_v,attn1.to_out.0,attn2.to_k,attn2.to_v"
FFN_TARGETS = ["ffn.net.0.proj", "ffn.net.2"]
FORMAT_VERSION = "1"
PEFT_METADATA_KEY = "lora_adapter_metadata"  # what diffusers reads to rebuild the LoraConfig


@dataclass
class LoraSpec:
    """Which matrices get a low-rank change, and how big."""

    rank: int = field(default=16, metadata={"help": "LoRA rank r"})
    alpha: float = field(
        default=16.0, metadata={"help": "LoRA alpha; the change is scaled by alpha/r"}
    )
    targets: str = field(
        default=DEFAULT_TARGETS,
        metadata={"help": "comma-separated module-name suffixes (PEFT target_modules)"},
    )
    ffn: bool = field(default=False, metadata={"help": "also adapt the feed-forward layers"})
    rslora: bool = field(default=False, metadata={"help": "rank-stabilised scaling alpha/sqrt(r)"})

    def target_list(self) -> list[str]:
        names = [t.strip() for t in self.targets.split(",") if t.strip()]
        return names + (FFN_TARGETS if self.ffn else [])

    def validate(self) -> None:
        if self.rank < 1:
            raise ValueError(f"--rank must be at least 1, not {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"--alpha must be positive, not {self.alpha}")
        if not self.target_list():
            raise ValueError("--targets names no modules")

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(
            r=self.rank,
            lora_alpha=self.alpha,
            target_modules=self.target_list(),
            use_rslora=self.rslora,
            init_lora_weights=True,  # B = 0: the adapter starts as the identity
        )


def add_lora(transformer, spec: LoraSpec, name: str = "default") -> None:
    """Freeze the transformer and add a trainable adapter ``name`` to it."""
    transformer.requires_grad_(False)
    matched = [
        n for n, _ in transformer.named_modules() if any(n.endswith(t) for t in spec.target_list())
    ]
    if not matched:
        raise ValueError(f"no module of the transformer matches the targets {spec.target_list()}")
    transformer.add_adapter(spec.peft_config(), adapter_name=name)


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen


def lora_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]


@contextlib.contextmanager
def adapters_disabled(model) -> Iterator[None]:
    """Run the frozen base model (e.g. for prior preservation targets)."""
    model.disable_adapters()
    try:
        yield
    finally:
        model.enable_adapters()


def adapter_state_dict(transformer, name: str = "default") -> dict[str, torch.Tensor]:
    """The adapter's weights under diffusers' Wan keys: transformer.blocks.N.attn1.to_q.lora_A.weight."""
    from peft.utils import get_peft_model_state_dict

    sd = get_peft_model_state_dict(transformer, adapter_name=name)
    return {
        f"transformer.{k}": v.detach().float().cpu().clone() for k, v in sd.items()
    }  # a snapshot, never a view of live weights


def base_hash(base_dir: Path) -> str:
    """A cheap fingerprint of a base model's transformer: config plus each weight file's
    name, size and first and last MiB (hashing a 28 GB checkpoint in full would take minutes)."""
    h = hashlib.sha256()
    tdir = Path(base_dir) / "transformer"
    for f in sorted(tdir.iterdir()) if tdir.is_dir() else []:
        if f.suffix not in (".json", ".safetensors"):
            continue
        h.update(f.name.encode())
        size = f.stat().st_size
        h.update(str(size).encode())
        with open(f, "rb") as fh:
            h.update(fh.read(1 << 20))
            if size > 2 << 20:
                fh.seek(-(1 << 20), os.SEEK_END)
                h.update(fh.read(1 << 20))
    return h.hexdigest()[:16]


def save_lora_file(
    path: Path,
    tensors: dict[str, torch.Tensor],
    spec: LoraSpec,
    cameo_meta: dict[str, object],
    overwrite: bool = False,
) -> Path:
    """Write a LoRA file that stock diffusers loads (keys + PEFT config metadata) and that
    describes itself (``cameo.*`` metadata). Written to a temporary name, then renamed."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists")
    cfg = spec.peft_config().to_dict()
    cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
    packed = {f"transformer.{k}": v for k, v in cfg.items()}
    meta = {
        "format": "pt",
        PEFT_METADATA_KEY: json.dumps(packed, indent=2, sort_keys=True, default=str),
        "cameo.format_version": FORMAT_VERSION,
        "cameo.lora_spec": json.dumps(asdict(spec)),
    }
    meta.update(
        {f"cameo.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in cameo_meta.items()}
    )
    return write_safetensors(path, tensors, meta)


def write_safetensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> Path:
    """Write under a temporary name, then rename: the final name is whole or absent."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_metadata(path: Path) -> dict[str, str]:
    """The safetensors header metadata; a ValueError (never a parser traceback) otherwise."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path}: only .safetensors LoRA files are loaded (pickle files can run code)"
        )
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise ValueError(
            f"{path}: not a readable safetensors file ({e.__class__.__name__}: {str(e)[:120]})"
        ) from e


def read_lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors LoRA file. Refuses, with a ValueError that says
    why: other file types (pickles can run code), unreadable headers, non-float tensors and
    non-finite weights."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path}: only .safetensors LoRA files are loaded (pickle files can run code)"
        )
    try:
        tensors = load_file(str(path))
        meta = read_metadata(path)
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise ValueError(
            f"{path}: not a readable safetensors file ({e.__class__.__name__}: {str(e)[:120]})"
        ) from e
    if not tensors:
        raise ValueError(f"{path}: holds no tensors")
    odd = [k for k, v in tensors.items() if not v.is_floating_point()]
    if odd:
        raise ValueError(f"{path}: {len(odd)} tensors are not floating point, e.g. {odd[0]}")
    bad = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path}: non-finite values in {len(bad)} tensors, e.g. {bad[0]}")
    return tensors, meta


def check_compatible(transformer, path: Path, base_dir: Path | None = None) -> None:
    """Refuse a LoRA that does not fit this transformer: keys that match no layer, matrix
    shapes that differ from the layers', or a cameo file made for another base model."""
    from .formats import convert_state_dict

    tensors, meta = read_lora_file(path)
    tensors, _, _ = convert_state_dict(tensors, "diffusers", meta)
    layers = dict(transformer.named_modules())
    for key, value in tensors.items():
        module = key.removeprefix("transformer.").rsplit(".lora_", 1)[0]
        layer = layers.get(module)
        layer = getattr(layer, "base_layer", layer)
        if layer is None or not hasattr(layer, "in_features"):
            raise ValueError(f"{path}: {module} matches no linear layer of this base model")
        want = layer.in_features if ".lora_A." in key else layer.out_features
        got = value.shape[1] if ".lora_A." in key else value.shape[0]
        if value.dim() != 2 or got != want:
            raise ValueError(
                f"{path}: {key} has shape {tuple(value.shape)}, but the layer has "
                f"{layer.in_features} inputs and {layer.out_features} outputs: made for another base model"
            )
    made_for = meta.get("cameo.base_hash")
    if made_for and base_dir is not None:
        here = base_hash(base_dir)
        if here != made_for:
            raise ValueError(
                f"{path}: trained on base model {meta.get('cameo.base', '?')} (hash {made_for}), "
                f"but this base model's hash is {here}"
            )


def load_adapter(transformer, path: Path, name: str) -> None:
    """Load a LoRA file in any supported format (diffusers, ComfyUI, kohya) into ``transformer``
    as adapter ``name``; every key must land on a layer, or it is an error."""
    from peft import LoraConfig, set_peft_model_state_dict

    from .formats import convert_state_dict

    tensors, meta = read_lora_file(path)
    tensors, meta, _ = convert_state_dict(tensors, "diffusers", meta)
    packed = json.loads(meta[PEFT_METADATA_KEY])
    cfg = {k.split(".", 1)[1]: v for k, v in packed.items() if k.startswith("transformer.")}
    modules = {n for n, _ in transformer.named_modules()}
    missing = sorted(
        {k.removeprefix("transformer.").rsplit(".lora_", 1)[0] for k in tensors} - modules
    )
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} LoRA modules match no layer of this model, e.g. {missing[:2]}"
        )
    transformer.add_adapter(LoraConfig(**cfg), adapter_name=name)
    sd = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    result = set_peft_model_state_dict(transformer, sd, adapter_name=name)
    unexpected = [k for k in getattr(result, "unexpected_keys", []) if "lora_" in k]
    if unexpected:
        raise ValueError(
            f"{path}: {len(unexpected)} keys match no layer of this model, e.g. {unexpected[0]}"
        )
