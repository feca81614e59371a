"""LoRA files onto a pipeline: compatibility checks, scales, the Wan 2.2 expert each file adapts,
and merges of several people's adapters into one."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..compose import MERGES, check_slots, load_modules, merge, save_modules
from ..lora_files import check_compatible, read_metadata, split_experts_file
from .config import parse_lora_arg, parse_region


@dataclass
class LoadedLoras:
    """Adapters loaded into a pipeline; for regional mixing, each one's trigger and region."""

    names: list[str] = field(default_factory=list)
    regional: dict[str, tuple[str, object]] | None = None
    windows: bool = False  # --mix windows: each region is denoised as a window of its own


def apply_loras(
    pipe,
    specs: list[str],
    fuse: bool = False,
    base_dir: Path | None = None,
    mix: str = "linear",
    regions: list[str] | None = None,
) -> LoadedLoras:
    """Load LoRA files into ``pipe`` with the stock diffusers loader and combine them by ``mix``:
    ``linear`` (adapter weights), a merge into one adapter (``cat``, ``svd``, ``ties``,
    ``dare_linear``), ``regional`` (each acts on its own region) or ``windows`` (each draws its
    region as a window of its own); see ``cameo.compose``."""

    paths = _with_halves([parse_lora_arg(s) for s in specs])
    metas = [read_metadata(Path(p)) for p, _ in paths]
    for (path, _), meta in zip(paths, metas, strict=True):
        check_compatible(_expert_of(pipe, meta), Path(path), base_dir)  # never a silent no-op
    if mix not in ("linear", "regional") and any(m.get("cameo.expert") == "low" for m in metas):
        raise ValueError(
            f"--mix {mix} is for LoRAs of one transformer; mix Wan 2.2 experts with --mix linear"
        )
    if mix == "windows" and getattr(pipe, "transformer_2", None) is not None:
        raise ValueError(
            "--mix windows is for one-transformer bases, not Wan 2.2 A14B's two experts"
        )
    if mix == "linear":
        check_slots(metas)
    if mix in MERGES and mix != "linear" and len(paths) > 1:
        paths = [(_merged_file(paths, mix), 1.0)]
    loaded, into_second = LoadedLoras(), False
    for i, (path, _) in enumerate(paths):
        name = f"lora{i}_{Path(path).stem}".replace(".", "_").replace("-", "_")
        low = len(paths) == len(metas) and metas[i].get("cameo.expert") == "low"
        pipe.load_lora_weights(
            str(path), adapter_name=name, **({"load_into_transformer_2": True} if low else {})
        )
        loaded.names.append(name)
        into_second |= low
    if not loaded.names:
        return loaded
    pipe.set_adapters(loaded.names, [w for _, w in paths])
    if mix in ("regional", "windows"):
        loaded.regional = _regions(loaded.names, metas, regions or [])
        loaded.windows = mix == "windows"
    elif fuse:
        # Wan 2.2 A14B: the low-noise expert's adapters live in transformer_2
        parts = ["transformer", "transformer_2"] if into_second else ["transformer"]
        pipe.fuse_lora(components=parts, adapter_names=loaded.names, lora_scale=1.0)
        pipe.unload_lora_weights()  # the change now lives in the weights
    return loaded


def _with_halves(paths: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Each LoRA of both Wan 2.2 experts (``cameo.expert`` "both") as its two halves, written
    to a temporary folder, at its scale; the others as they are."""
    out = []
    for path, scale in paths:
        if read_metadata(Path(path)).get("cameo.expert") != "both":
            out.append((path, scale))
            continue
        halves = split_experts_file(Path(path), Path(tempfile.mkdtemp(prefix="cameo-experts-")))
        if halves is None:
            raise ValueError(f"{path}: marked as both Wan 2.2 experts, but holds one")
        out.extend((str(h), scale) for h in halves)
    return out


def _expert_of(pipe, meta: dict):
    """The transformer a LoRA file belongs to (Wan 2.2's low-noise expert or the main one)."""
    if meta.get("cameo.expert") == "low":
        if getattr(pipe, "transformer_2", None) is None:
            raise ValueError(
                "this LoRA adapts the low-noise expert of a Wan 2.2 A14B base; this base has none"
            )
        return pipe.transformer_2
    return pipe.transformer


def _merged_file(paths: list[tuple[str, float]], method: str) -> Path:

    mods = [load_modules(Path(p))[0] for p, _ in paths]
    merged = merge(mods, [w for _, w in paths], method)
    out = Path(tempfile.mkdtemp(prefix="cameo-merge-")) / f"merged-{method}.safetensors"
    return save_modules(out, merged, {"cameo.merge": method})


def _regions(
    names: list[str], metas: list[dict], specs: list[str]
) -> dict[str, tuple[str, object]]:
    given = dict(parse_region(s) for s in specs)
    defaults = ["left", "right", "top", "bottom"]
    out = {}
    for i, (name, meta) in enumerate(zip(names, metas, strict=True)):
        trigger = meta.get("cameo.trigger", "")
        out[name] = (trigger, given.get(trigger, defaults[i % len(defaults)]))
    return out
