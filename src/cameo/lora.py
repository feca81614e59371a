"""LoRA on the Wan transformer, through PEFT and diffusers; only what they lack is written here.

ΔW = B·A with A (r × k), B (d × r); a layer computes W x + s · (α / r) · B A x (α / √r with
rsLoRA, Kalajdzievski 2023). PEFT injects and trains the layers; diffusers loads and mixes them at
generation. Here: which layers get an adapter (``LoraSpec``), adding, snapshotting and loading
adapters. Files (write, read, check, convert) are ``cameo.lora_files``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, set_peft_model_state_dict
from peft.utils import get_peft_model_state_dict

from .formats import PEFT_METADATA_KEY, convert_state_dict
from .lora_files import read_lora_file

# The default: all of self-attention, and of cross-attention only the keys and values made from
# the text. The cross-attention query and output act on every prompt alike, and adapting them
# moved unrelated prompts towards the person; without them, over 5 held-out people, leakage fell
# from +0.052 to +0.043 and identification rose from 0.55 to 0.65 (docs/log.md).
DEFAULT_TARGETS = "attn1.to_q,attn1.to_k,attn1.to_v,attn1.to_out.0,attn2.to_k,attn2.to_v"
FFN_TARGETS = ["ffn.net.0.proj", "ffn.net.2"]


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

    def peft_config(self) -> LoraConfig:
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


def adapter_spec(model, name: str = "default") -> LoraSpec:
    """The ``LoraSpec`` of an adapter as PEFT holds it (rank, alpha, targets, rsLoRA), so a run
    started from a LoRA file describes the adapter it trained, not the command line's flags."""
    c = model.peft_config[name]
    targets = c.target_modules
    targets = ",".join(sorted(targets)) if not isinstance(targets, str) else targets
    return LoraSpec(rank=c.r, alpha=float(c.lora_alpha), targets=targets, rslora=c.use_rslora)


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
    sd = get_peft_model_state_dict(transformer, adapter_name=name)
    return {
        f"transformer.{k}": v.detach().float().cpu().clone() for k, v in sd.items()
    }  # a snapshot, never a view of live weights


def load_adapter(transformer, path: Path, name: str) -> None:
    """Load a LoRA file in any supported format (diffusers, ComfyUI, kohya) into ``transformer``
    as adapter ``name``; every key must land on a layer, or it is an error."""
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
