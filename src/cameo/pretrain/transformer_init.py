"""Warm start of the transformer stage (``--init-transformer``): another transformer's weights
instead of a random initialisation. Shapes must match, with three exceptions: the latent input
and output layers start afresh for a VAE with other latent channels, narrower feed-forwards grow
into wider ones, and a text-to-video transformer's patch embedding gains an image-to-video one's
first-frame input channels (both the same function at step 0)."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ..models import tiny_model_dir
from .config import PretrainConfig


def _transformer_weights_file(source: str) -> Path:
    """The safetensors file of ``source``: 'cameo-tiny', a pipeline folder or a transformer folder."""
    root = tiny_model_dir() if source == "cameo-tiny" else Path(source)
    for folder in (root / "transformer", root):
        found = sorted(folder.glob("diffusion_pytorch_model*.safetensors"))
        if len(found) == 1:
            return found[0]
    raise ValueError(
        f"--init-transformer {source}: no single diffusion_pytorch_model*.safetensors in it "
        "or in its transformer/ folder"
    )


# The layers whose shapes follow the VAE's latent channels: a transformer warm-started for a VAE
# with other channels keeps everything else and starts these afresh.
LATENT_IO_LAYERS = ("patch_embedding.", "proj_out.")
# The feed-forward layers' up-projection (weight rows, bias) and down-projection (weight
# columns): a transformer with wider feed-forwards grows from a narrower one through them.
FFN_UP, FFN_DOWN = (".ffn.net.0.proj.weight", ".ffn.net.0.proj.bias"), ".ffn.net.2.weight"


# The patch embedding's weight, (dim, in_channels, *patch): an image-to-video transformer
# (``TransformerConfig.image_to_video``) grows from a text-to-video one through its input
# channels, the latents followed by the first-frame mask and condition latents.
PATCH_IN = "patch_embedding.weight"


def _growth_axis(key: str) -> int | None:
    """The axis of a tensor that a warm start may widen: a feed-forward tensor's hidden
    units, the patch embedding's input channels; None for others."""
    if key == PATCH_IN:
        return 1
    return 1 if key.endswith(FFN_DOWN) else 0 if key.endswith(FFN_UP) else None


def _grows_into(key: str, theirs: tuple, ours: tuple, model: torch.nn.Module) -> bool:
    """Whether ``theirs`` is a narrower feed-forward tensor than ``ours`` and otherwise alike,
    or the patch embedding of a text-to-video transformer on the same latents as ``model``,
    an image-to-video one."""
    axis = _growth_axis(key)
    if axis is None or len(theirs) != len(ours) or theirs[axis] >= ours[axis]:
        return False
    if key == PATCH_IN:
        latent = model.config.out_channels  # the new channels: mask (4) and condition latents
        if theirs[1] != latent or ours[1] != 2 * latent + 4:
            return False
    return all(a == b for i, (a, b) in enumerate(zip(theirs, ours, strict=True)) if i != axis)


def _check_shapes(model: torch.nn.Module, path: Path, source: str) -> tuple[list[str], list[str]]:
    """Every tensor of ``model`` present in ``path`` with the same shape, and nothing more: a
    partial warm start would hide an architecture mismatch. Exceptions: the latent
    input and output layers (``LATENT_IO_LAYERS``), when the VAE's channels differ, and
    feed-forward layers narrower than ``model``'s, or a text-to-video patch embedding for an
    image-to-video ``model``, which grow into them. Returns the tensors to
    start afresh and those to grow. Reads only the file's header."""
    ours = model.state_dict()
    with safe_open(str(path), "pt") as f:
        theirs = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    wrong = sorted(k for k in ours if theirs.get(k) != tuple(ours[k].shape))
    grown = [
        k for k in wrong if k in theirs and _grows_into(k, theirs[k], tuple(ours[k].shape), model)
    ]
    fresh = [k for k in wrong if k in theirs and k.startswith(LATENT_IO_LAYERS) and k not in grown]
    wrong = [k for k in wrong if k not in fresh and k not in grown]
    if wrong or len(theirs) != len(ours):
        raise ValueError(
            f"--init-transformer {source}: its transformer does not match this architecture "
            f"({len(wrong)} missing or differently shaped tensors, e.g. {wrong[:3]})"
        )
    return fresh, grown


def _grown_tensor(key: str, theirs: torch.Tensor, ours: torch.Tensor) -> torch.Tensor:
    """``ours`` (freshly initialised, wider) with ``theirs`` in its first hidden units. The new
    units keep their fresh up-projection and get a zero down-projection, so the grown layer
    computes exactly what the narrow one did until training moves them (Net2Net's
    function-preserving widening, Chen et al. 2016, with zeros instead of copied units). The
    patch embedding's new input channels (the first frame) likewise start at zero: the
    image-to-video transformer predicts what the text-to-video one does, whatever the frame."""
    out, axis = ours.clone(), _growth_axis(key)
    n = theirs.shape[axis]
    if axis == 1:  # down-projection (dim, ffn) or patch embedding: old columns, then zeros
        out[:, :n] = theirs
        out[:, n:] = 0
    else:  # up-projection rows (ffn, dim) or bias (ffn,)
        out[:n] = theirs
    return out


def warm_start(model: torch.nn.Module, source: str) -> dict:
    """Load another transformer's weights (of the same shapes) into ``model``, in its dtype;
    for a VAE with other latent channels, all but the latent input and output layers, which
    keep their fresh initialisation; from a transformer with narrower feed-forwards, those
    grown into ``model``'s, and from a text-to-video one into an image-to-video ``model``, the
    patch embedding with zero weights on the first-frame channels (``_grown_tensor``: the same
    function at step 0). Returns where
    the weights came from (the file and its SHA-256) and what started afresh or grew, for the
    run's records."""
    path = _transformer_weights_file(source)
    fresh, grown = _check_shapes(model, path, source)
    ours = model.state_dict()
    loaded = {k: v.to(ours[k].dtype) for k, v in load_file(path).items() if k not in fresh}
    for k in grown:
        loaded[k] = _grown_tensor(k, loaded[k], ours[k])
    model.load_state_dict({**ours, **loaded})
    print(f"transformer: warm start from {path}", file=sys.stderr)
    if fresh:
        print(f"transformer: started afresh (latent channels differ): {fresh}", file=sys.stderr)
    if any(k != PATCH_IN for k in grown):
        print(f"transformer: feed-forwards grown to {model.config.ffn_dim} wide", file=sys.stderr)
    if PATCH_IN in grown:
        print("transformer: first-frame input channels added, at zero", file=sys.stderr)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    record = {"source": source, "file": str(path.resolve()), "sha256": digest, "fresh": fresh}
    return {**record, "grown": grown} if grown else record


def check_warm_start(cfg: PretrainConfig) -> None:
    """Refuse a bad --init-transformer before any stage runs (not after the latent cache)."""
    if cfg.init_transformer and cfg.stage in ("transformer", "all"):
        source = cfg.init_transformer
        _check_shapes(cfg.transformer.build(), _transformer_weights_file(source), source)
