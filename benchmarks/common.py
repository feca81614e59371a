"""Helpers shared by the quality benchmarks: machine description, report writing, overrides."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

from cameo.models import frames_to_vae_input

DOCS = Path(__file__).resolve().parents[1] / "docs"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def commit() -> str:
    """HEAD, with "+uncommitted" when the code (src/, benchmarks/) differs from it."""
    try:
        head = subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--", "src", "benchmarks"], check=False
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+uncommitted" if dirty else "")


def write_json(name: str, data: dict) -> Path:
    path = DOCS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "commit": commit(),
        **data,
    }
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def parse_overrides(pairs: list[str], defaults: object) -> dict:
    """``key=value`` overrides of a config dataclass's fields, typed like the field's default."""
    out = {}
    nested = [
        getattr(defaults, f.name) for f in dataclasses.fields(defaults) if f.metadata.get("flatten")
    ]
    for pair in pairs:
        key, _, value = pair.partition("=")
        owner = next((o for o in [defaults, *nested] if hasattr(o, key)), None)
        if owner is None:
            raise SystemExit(f"{type(defaults).__name__} has no field {key!r}")
        kind = type(getattr(owner, key))
        if getattr(owner, key) is None:  # left to the base: the field's declared type
            declared = {f.name: str(f.type) for f in dataclasses.fields(owner)}[key]
            kind = {"int | None": int, "float | None": float, "bool | None": bool}.get(
                declared, str
            )
        out[key] = value.lower() in ("1", "true", "yes") if kind is bool else kind(value)
    return out


def add_gen_option(ap) -> None:
    """``--gen KEY=VALUE``: generate every clip with that GenerateConfig field changed."""
    ap.add_argument(
        "--gen",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="generate with this GenerateConfig field changed, e.g. guidance=3 "
        "(default: cameo generate's defaults)",
    )


def vae_roundtrip(vae, frames: np.ndarray) -> np.ndarray:
    """uint8 (F, H, W, 3) -> the VAE's reconstruction of it, uint8 (F, H, W, 3)."""
    x = frames_to_vae_input(frames)[None]  # (1, 3, F, H, W)
    with torch.no_grad():
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    return ((rec[0].permute(1, 2, 3, 0) + 1) * 127.5).round().byte().numpy()


@contextlib.contextmanager
def decoded_latents(vae):
    """Inside the block, every latent tensor ``vae.decode`` is given is kept, on the CPU, in the
    list the block receives: a generated clip's latents exactly as the pipeline decodes them
    (un-normalised), so that another decoder of the same latent space can decode them again."""
    kept: list[torch.Tensor] = []
    own = vae.__dict__.get("decode")  # an instance attribute someone else set, or None

    def decode(z, *args, **kwargs):
        kept.append(z.detach().to("cpu", torch.float32).clone())
        return (own or type(vae).decode.__get__(vae))(z, *args, **kwargs)

    vae.decode = decode
    try:
        yield kept
    finally:
        if own is None:
            del vae.decode
        else:
            vae.decode = own
