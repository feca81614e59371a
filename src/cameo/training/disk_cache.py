"""Latents and text embeddings kept on disk beside the run, so a second run or a ``--resume``
on the same data encodes nothing, and a changed photo re-encodes only itself.

Each entry is one safetensors file named by a hash of what made it: for a latent, the frames
the VAE saw (so the file, its crop and its bucket) and the VAE (its config and weights'
fingerprint, its dtype); for a text embedding, the text, the text encoder and tokenizer, and
the token count. A file whose key no longer matches is simply not read again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..lora_files import component_hash, write_safetensors

Tensor = torch.Tensor
UNREADABLE = (OSError, KeyError, ValueError, RuntimeError, SafetensorError)


class DiskCache:
    """Two stores under ``root``: ``latents/`` and ``text/``. ``root=None`` keeps nothing on
    disk (every call encodes). ``encoded`` and ``reused`` count what each call did."""

    def __init__(self, root: Path | None, base_dir: Path, vae_dtype: torch.dtype, tokens: int):
        self.root = Path(root) if root is not None else None
        base = Path(base_dir)
        self.vae_key = f"{component_hash(base, 'vae')}-{vae_dtype}"
        text = component_hash(base, "text_encoder") + component_hash(base, "tokenizer")
        self.text_key = f"{text}-{tokens}"
        # image-to-video: the first frame's encoding also depends on the CLIP image encoder
        self.first_key = self.vae_key + component_hash(base, "image_encoder")
        self.encoded = {"latents": 0, "text": 0, "first": 0}
        self.reused = {"latents": 0, "text": 0, "first": 0}

    def latent(self, frames: np.ndarray, encode: Callable[[np.ndarray], Tensor]) -> Tensor:
        """``encode(frames)`` for uint8 frames (F, H, W, 3), or the stored result."""
        h = hashlib.sha256(self.vae_key.encode())
        h.update(str(frames.shape).encode())
        h.update(np.ascontiguousarray(frames).tobytes())
        return self._get("latents", h.hexdigest(), lambda: encode(frames))

    def first_frame(
        self, frames: np.ndarray, encode: Callable[[np.ndarray], dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        """``encode(frames)`` for the first-frame condition of a clip (F, H, W, 3) of an
        image-to-video base, or the stored tensors: they depend on the first frame and the
        clip's shape only."""
        h = hashlib.sha256(self.first_key.encode())
        h.update(str(frames.shape).encode())
        h.update(np.ascontiguousarray(frames[0]).tobytes())
        key = h.hexdigest()
        got = self._load_all("first", key) if self.root else None
        if got is not None:
            self.reused["first"] += 1
            return got
        value = encode(frames)
        self.encoded["first"] += 1
        if self.root is not None:
            tensors = {k: v.contiguous() for k, v in value.items()}
            write_safetensors(self._path("first", key), tensors, {})
        return value

    def texts(self, texts: list[str], encode: Callable[[list[str]], Tensor]) -> Tensor:
        """``encode(texts)`` (N, T, D), or the stored rows when every text is stored. When any
        is missing, all are encoded again together (seconds, even for UMT5-XXL on a GPU), so
        that stored and fresh embeddings always come from the same batches, to the bit."""
        keys = [hashlib.sha256(f"{self.text_key}\0{t}".encode()).hexdigest() for t in texts]
        found = [self._load("text", k) for k in keys] if self.root else [None]
        if all(e is not None for e in found):
            self.reused["text"] += len(texts)
            return torch.stack(found)
        fresh = encode(texts)  # (N, T, D)
        for k, e in zip(keys, fresh, strict=True):
            self._store("text", k, e)
        self.encoded["text"] += len(texts)
        return fresh

    def _get(self, store: str, key: str, make: Callable[[], Tensor]) -> Tensor:
        got = self._load(store, key) if self.root else None
        if got is not None:
            self.reused[store] += 1
            return got
        value = make()
        self.encoded[store] += 1
        self._store(store, key, value)
        return value

    def _path(self, store: str, key: str) -> Path:
        return self.root / store / f"{key[:32]}.safetensors"

    def _load(self, store: str, key: str) -> Tensor | None:
        got = self._load_all(store, key)
        return None if got is None else got.get("value")

    def _load_all(self, store: str, key: str) -> dict[str, Tensor] | None:
        path = self._path(store, key)
        if not path.is_file():
            return None
        try:
            return load_file(str(path))
        except UNREADABLE:  # a torn or foreign file: encode again
            return None

    def _store(self, store: str, key: str, value: Tensor) -> None:
        if self.root is not None:
            write_safetensors(self._path(store, key), {"value": value.contiguous()}, {})
