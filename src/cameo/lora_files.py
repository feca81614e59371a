"""LoRA files: write, read, check against a base model, and convert between formats.

A cameo LoRA file is a safetensors file in diffusers' key layout with the PEFT config metadata
that stock ``WanPipeline.load_lora_weights`` reads (so it gets the right alpha), plus cameo's own
``cameo.*`` metadata (trigger, base model and its hash, training config, metrics). Files are
written under a temporary name and renamed, and read strictly: only safetensors (pickles can run
code), float and finite tensors, with a ValueError that says why otherwise. The key formats
themselves are pure state-dict converters in ``cameo.formats``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .formats import PEFT_METADATA_KEY, Coverage, convert_state_dict, layer_shapes
from .models import resolve_base

if TYPE_CHECKING:
    from .lora import LoraSpec

FORMAT_VERSION = "1"


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


def save_lora_file(
    path: Path,
    tensors: dict[str, torch.Tensor],
    spec: LoraSpec,
    cameo_meta: dict[str, object],
    overwrite: bool = False,
) -> Path:
    """Write a LoRA file that stock diffusers loads (keys + PEFT config metadata) and that
    describes itself (``cameo.*`` metadata). ``spec`` is a ``LoraSpec`` (any dataclass with a
    ``peft_config()``). Written to a temporary name, then renamed."""
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


def _only_safetensors(path: Path) -> None:
    if path.suffix != ".safetensors":
        raise ValueError(
            f"{path}: only .safetensors LoRA files are loaded (pickle files can run code)"
        )


def _unreadable(path: Path, e: Exception) -> ValueError:
    return ValueError(
        f"{path}: not a readable safetensors file ({e.__class__.__name__}: {str(e)[:120]})"
    )


def read_metadata(path: Path) -> dict[str, str]:
    """The safetensors header metadata; a ValueError (never a parser traceback) otherwise."""
    path = Path(path)
    _only_safetensors(path)
    try:
        with safe_open(str(path), "pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise _unreadable(path, e) from e


def read_lora_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors LoRA file. Refuses, with a ValueError that says
    why: other file types (pickles can run code), unreadable headers, non-float tensors and
    non-finite weights."""
    path = Path(path)
    _only_safetensors(path)
    try:
        tensors = load_file(str(path))
        meta = read_metadata(path)
    except Exception as e:  # safetensors raises its own error types for malformed files
        raise _unreadable(path, e) from e
    if not tensors:
        raise ValueError(f"{path}: holds no tensors")
    odd = [k for k, v in tensors.items() if not v.is_floating_point()]
    if odd:
        raise ValueError(f"{path}: {len(odd)} tensors are not floating point, e.g. {odd[0]}")
    bad = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{path}: non-finite values in {len(bad)} tensors, e.g. {bad[0]}")
    return tensors, meta


def base_hash(base_dir: Path) -> str:
    """A cheap fingerprint of a base model's transformer (see ``component_hash``)."""
    return component_hash(base_dir, "transformer")


def component_hash(base_dir: Path, component: str) -> str:
    """A cheap fingerprint of one component folder of a diffusers directory: its configs plus
    each weight file's name, size and first and last MiB (hashing a 28 GB checkpoint in full
    would take minutes). Links (the built-in model's MiniLM files) are followed."""
    h = hashlib.sha256()
    cdir = Path(base_dir) / component
    for f in sorted(cdir.iterdir()) if cdir.is_dir() else []:
        if f.suffix not in (".json", ".safetensors", ".model", ".txt") or not f.is_file():
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


def check_compatible(transformer, path: Path, base_dir: Path | None = None) -> None:
    """Refuse a LoRA that does not fit this transformer: keys that match no layer, matrix
    shapes that differ from the layers', or a cameo file made for another base model."""
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


def base_layer_shapes(base: str | Path | None) -> dict[str, tuple[int, int]]:
    """The layer shapes (``formats.layer_shapes``) of a base model: "cameo-tiny" or a diffusers
    directory, read from its transformer config without loading any weights."""
    config = resolve_base(base) / "transformer" / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{config} does not exist")
    return layer_shapes(json.loads(config.read_text()))


def convert_file(
    src: Path, dst: Path, to: str, overwrite: bool = False, base: str | Path | None = None
) -> Coverage:
    """Read ``src`` (safetensors only), convert to ``to``, write ``dst`` atomically.

    The kohya format needs layers that the LoRA may not adapt (see ``formats``); their sizes come
    from ``base``, or else from the base model named in the file's ``cameo.base`` metadata when it
    is on this machine."""
    src, dst = Path(src), Path(dst)
    if dst.exists() and not overwrite:
        raise FileExistsError(f"{dst} exists")
    sd, meta = read_lora_file(src)
    shapes = None
    if to == "kohya":
        if base is not None:
            shapes = base_layer_shapes(base)
        elif "cameo.base" in meta:
            try:
                shapes = base_layer_shapes(meta["cameo.base"])
            except (OSError, ValueError, KeyError):
                shapes = None  # not here: fine unless the export needs it (then a clear error)
    out, new_meta, cov = convert_state_dict(sd, to, meta, shapes)
    write_safetensors(dst, out, new_meta)
    return cov
