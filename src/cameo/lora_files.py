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
from dataclasses import asdict, replace
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
EXPERTS = ("high", "low")  # Wan 2.2 A14B: transformer (noisy steps), transformer_2
LOW_COMPONENT = "transformer_2"


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
    components: tuple[str, ...] = ("transformer",),
) -> Path:
    """Write a LoRA file that stock diffusers loads (keys + PEFT config metadata) and that
    describes itself (``cameo.*`` metadata). ``spec`` is a ``LoraSpec`` (any dataclass with a
    ``peft_config()``); ``components``: the pipeline components whose keys the file holds, each
    given the config. Written to a temporary name, then renamed."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists")
    cfg = spec.peft_config().to_dict()
    cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
    packed = {f"{c}.{k}": v for c in components for k, v in cfg.items()}
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


def expert_halves(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]] | None:
    """The two halves of a Wan 2.2 A14B LoRA that adapts both experts, ``{"high": ..., "low":
    ...}``, each under ``transformer.`` keys as a one-expert file has them; None for a LoRA
    of one transformer. Such a file keys the low-noise expert by its pipeline component,
    ``transformer_2.``."""
    low = {k: v for k, v in tensors.items() if k.startswith(f"{LOW_COMPONENT}.")}
    if not low:
        return None
    return {
        "high": {k: v for k, v in tensors.items() if not k.startswith(f"{LOW_COMPONENT}.")},
        "low": {f"transformer.{k.split('.', 1)[1]}": v for k, v in low.items()},
    }


def half_paths(path: Path) -> dict[str, Path]:
    """Where the halves of a two-expert LoRA ``path`` go: NAME_high_noise.safetensors and
    NAME_low_noise.safetensors beside it, the names Wan 2.2's high- and low-noise LoRAs carry
    in ComfyUI and AI Toolkit."""
    path = Path(path)
    return {side: path.with_name(f"{path.stem}_{side}_noise{path.suffix}") for side in EXPERTS}


def save_expert_files(
    path: Path,
    tensors: dict[str, torch.Tensor],
    spec: LoraSpec,
    cameo_meta: dict[str, object],
    overwrite: bool = False,
) -> list[Path]:
    """A two-expert LoRA as cameo's one file (``cameo.expert`` "both") and as its two halves
    (``half_paths``; "high" and "low", each loadable alone, by stock diffusers too)."""
    halves = expert_halves(tensors)
    if halves is None:
        raise ValueError("save_expert_files: the tensors adapt one transformer")
    meta = {**cameo_meta, "expert": "both"}
    written = [save_lora_file(path, tensors, spec, meta, overwrite, ("transformer", LOW_COMPONENT))]
    for side, half_path in half_paths(path).items():
        half_meta = {**cameo_meta, "expert": side}
        written.append(save_lora_file(half_path, halves[side], spec, half_meta, overwrite))
    return written


def split_experts_file(path: Path, out_dir: Path) -> tuple[Path, Path] | None:
    """The halves of a two-expert LoRA file written to ``out_dir`` as one-expert files (high,
    low); None when ``path`` adapts one transformer."""
    tensors, meta = read_lora_file(path)
    halves = expert_halves(tensors)
    if halves is None:
        return None
    written = []
    for side, half_path in half_paths(Path(out_dir) / Path(path).name).items():
        write_safetensors(half_path, halves[side], {**meta, "cameo.expert": side})
        written.append(half_path)
    return written[0], written[1]


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
    is on this machine. A LoRA of both Wan 2.2 experts stays one file in the diffusers format and
    becomes its two halves (``half_paths(dst)``) in the others, whose files hold one transformer
    each. The coverage's ``files`` lists what was written."""
    src, dst = Path(src), Path(dst)
    sd, meta = read_lora_file(src)
    halves = expert_halves(sd)
    targets = [dst] if halves is None or to == "diffusers" else list(half_paths(dst).values())
    taken = [t for t in targets if t.exists()]
    if taken and not overwrite:
        raise FileExistsError(f"{taken[0]} exists")
    shapes = _kohya_shapes(meta, base) if to == "kohya" else None
    if halves is None:
        out, new_meta, cov = convert_state_dict(sd, to, meta, shapes)
        write_safetensors(dst, out, new_meta)
        return replace(cov, files=[str(dst)])
    parts = {
        side: convert_state_dict(half, to, {**meta, "cameo.expert": side}, shapes)
        for side, half in halves.items()
    }
    (high, high_meta, a), (low, low_meta, b) = parts["high"], parts["low"]
    cov = replace(
        a, keys_in=len(sd), modules=a.modules + b.modules, keys_out=a.keys_out + b.keys_out
    )
    if to != "diffusers":
        for target, (out, new_meta, _) in zip(targets, parts.values(), strict=True):
            write_safetensors(target, out, new_meta)
        return replace(cov, files=[str(t) for t in targets])
    joined = {**high, **{f"{LOW_COMPONENT}.{k.split('.', 1)[1]}": v for k, v in low.items()}}
    peft = {
        **json.loads(high_meta[PEFT_METADATA_KEY]),
        **{
            f"{LOW_COMPONENT}.{k.split('.', 1)[1]}": v
            for k, v in json.loads(low_meta[PEFT_METADATA_KEY]).items()
        },
    }
    new_meta = {**high_meta, "cameo.expert": "both", PEFT_METADATA_KEY: json.dumps(peft, indent=2)}
    write_safetensors(dst, joined, new_meta)
    return replace(cov, files=[str(dst)])


def _kohya_shapes(meta: dict[str, str], base: str | Path | None):
    """The base's layer shapes for a kohya export: from ``base``, or the base model named in
    the file (None when it is not on this machine: fine unless the export needs it, which then
    fails with a clear error)."""
    if base is not None:
        return base_layer_shapes(base)
    if "cameo.base" in meta:
        try:
            return base_layer_shapes(meta["cameo.base"])
        except (OSError, ValueError, KeyError):
            return None
    return None
