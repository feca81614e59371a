"""The data of every stage, drawn from the procedural world by index: the batch of step s is a
pure function of (seed, s), so a resumed stage replays nothing and skips nothing.

The VAE and decoder stages render their batches (in worker processes with ``--workers``); the
transformer stage draws from a cache of VAE latents and caption embeddings built once per run
(``build_cache``, ``cache.pt``).
"""

from __future__ import annotations

import json
import math
import signal
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..diffusion import FirstFrame, sample_sigmas
from ..models import FLOW_SHIFT, encode_prompts, frames_to_vae_input
from ..models.first_frame import as_image, encode_first_frame
from ..world import FAMOUS, training_sample, training_sample_is_pair
from .config import PretrainConfig

# ------------------------------------------------------------------------ rendered batches


def _vae_batch(cfg: PretrainConfig, step: int) -> list[torch.Tensor]:
    """Single frames and short clips, a pure function of the step. Two-person frames are cut
    to a random square half so one batch has one shape."""
    base = (cfg.seed * 1_000_003 + step) * (cfg.vae_batch_images + cfg.vae_batch_clips)
    images, clips = [], []
    for k in range(cfg.vae_batch_images + cfg.vae_batch_clips):
        is_clip = k >= cfg.vae_batch_images
        s = training_sample(base + k, frames=cfg.vae_clip_frames if is_clip else 1, size=cfg.size)
        pix = s.frames
        if pix.shape[2] != cfg.size:
            off = (base + k) % 2 * (pix.shape[2] - cfg.size)
            pix = pix[:, :, off : off + cfg.size]
        (clips if is_clip else images).append(frames_to_vae_input(pix))
    out = [torch.stack(images)]
    if clips:
        out.append(torch.stack(clips))
    return out


def _full_clips(cfg: PretrainConfig, batch: int, step: int) -> torch.Tensor:
    """The decoder stage's batch: full-length clips, a two-person one cut to one frame width."""
    xs = [
        frames_to_vae_input(
            training_sample(70_000_000 + step * batch + k, frames=cfg.frames, size=cfg.size).frames[
                :, :, : cfg.size
            ]
        )
        for k in range(batch)
    ]
    return torch.stack(xs)  # (B, 3, F, H, W)


def _captioned_clips(cfg: PretrainConfig, batch: int, step: int):
    """The denoised decoder stage's batch: single-person clips (a two-person clip cropped to
    one frame width would contradict its caption), their captions, and the step, which seeds
    the redraw."""
    samples = [
        _render_for_cache(cfg, 70_000_000 + step * batch + k, cfg.frames, pair=False)
        for k in range(batch)
    ]
    x = torch.stack([frames_to_vae_input(s.frames) for s in samples])  # (B, 3, F, H, W)
    return x, [s.caption for s in samples], step


# ---------------------------------------------------------------- data ahead of the model


class _ByIndex(torch.utils.data.Dataset):
    """Item i is whatever ``make(first + i)`` returns: a whole step's batch, or one chunk of the
    cache, so worker processes can render ahead while the data stays a pure function of i."""

    def __init__(self, make, first: int, stop: int):
        self.make, self.first, self.stop = make, first, stop

    def __len__(self) -> int:
        return max(0, self.stop - self.first)

    def __getitem__(self, i: int):
        return self.make(self.first + i)


def _worker_init(_worker: int) -> None:
    torch.set_num_threads(1)  # each worker renders on one core; the workers are the parallelism
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the main process's: it stops the run


def prefetched(make, first: int, stop: int, workers: int):
    """``make(i)`` for i in [first, stop), in order; computed by ``workers`` processes if > 0."""
    if workers == 0:
        return (make(i) for i in range(first, stop))
    loader = torch.utils.data.DataLoader(
        _ByIndex(make, first, stop),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4,
        worker_init_fn=_worker_init,
        pin_memory=torch.cuda.is_available(),
    )
    return iter(loader)


# --------------------------------------------------------------- the transformer's cache

CACHE_CHUNK = 8  # samples rendered and encoded together


def _render_chunk(cfg, indices: list[int], frames: int, pair: bool, chunk: int):
    """One chunk of a cache group: its pixels (F, H, W, 3) uint8 and captions."""
    samples = [
        _render_for_cache(cfg, j, frames, pair)
        for j in indices[chunk * CACHE_CHUNK : (chunk + 1) * CACHE_CHUNK]
    ]
    return [s.frames for s in samples], [s.caption for s in samples]


def _cache_group(
    cfg, vae, name: str, indices: list[int], frames: int, pair: bool, first_pipe=None
) -> dict:
    """Render, encode and caption one group of samples of one shape; with ``first_pipe`` (a
    ``WanImageToVideoPipeline`` around ``vae``), also each sample's first-frame condition as
    that pipeline encodes it at generation (``encode_first_frame``), (N, 4 + C, F', h, w)."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    lat, caps, conditions = [], [], []
    n_chunks = math.ceil(len(indices) / CACHE_CHUNK)
    chunks = prefetched(
        partial(_render_chunk, cfg, indices, frames, pair), 0, n_chunks, cfg.workers
    )
    for pixels, captions in tqdm(chunks, total=n_chunks, desc=f"cache {name}", dynamic_ncols=True):
        x = torch.stack([frames_to_vae_input(p) for p in pixels])  # (B, 3, F, H, W)
        with torch.no_grad():
            z = vae.encode(x.to(vae.device)).latent_dist.mean.cpu()
        lat.append(((z - mean) / std).half())
        caps += captions
        if first_pipe is not None:
            conditions.append(_first_frame_conditions(first_pipe, pixels).half())
    group = {"latents": torch.cat(lat), "captions": caps}
    if conditions:
        group["conditions"] = torch.cat(conditions)
    return group


def _first_frame_conditions(first_pipe, pixels: list[np.ndarray]) -> torch.Tensor:
    """Each clip's first-frame condition (N, 4 + C, F', h, w), as ``encode_first_frame`` gives
    it, with one VAE call for all but the first: the frame mask is the first clip's (the same
    for clips of one shape), the latents those of [first frame, zero frames...] normalised as
    ``WanImageToVideoPipeline.prepare_latents`` does. Equal to ``encode_first_frame`` up to
    float rounding (tested); a batch of one encode per clip takes about 4x longer on a CPU."""
    exact = encode_first_frame(first_pipe, pixels[0])["condition"]  # (1, 4 + C, F', h, w)
    if len(pixels) == 1:
        return exact
    n, height, width = pixels[0].shape[:3]
    images = torch.cat(
        [
            first_pipe.video_processor.preprocess(as_image(p[0]), height=height, width=width)
            for p in pixels[1:]
        ]
    )  # (B, 3, H, W) in [-1, 1]
    zeros = images.new_zeros(len(images), 3, n - 1, height, width)
    video = torch.cat([images[:, :, None], zeros], dim=2)  # (B, 3, F, H, W)
    vae = first_pipe.vae
    with torch.no_grad():
        z = vae.encode(video.to(vae.device, vae.dtype)).latent_dist.mode().float().cpu()
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    mask = exact[:, :4].expand(len(z), -1, -1, -1, -1)
    return torch.cat([exact, torch.cat([mask, (z - mean) * inv_std], dim=1)])


def _render_for_cache(cfg, j: int, frames: int, pair: bool):
    """Sample j of the cache, or the next index after it of the requested kind (pair or single)."""
    k = j
    while training_sample_is_pair(k) != pair:
        k += 7_919_993  # jump to an unrelated index deterministically
    return training_sample(k, frames=frames, size=cfg.size, pair_width=cfg.size * 2)


def build_cache(cfg: PretrainConfig, run: Path, vae, pipe, first_pipe=None) -> dict[str, dict]:
    """The transformer stage's cache (``cache.pt``), built once per run: per group (clip,
    image, pair) the normalised latents (N, C, F', h, w) fp16, caption ids and, given
    ``first_pipe`` (``--task i2v``), first-frame conditions; the caption embeddings."""
    path = run / "cache.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    group = partial(_cache_group, cfg, vae, first_pipe=first_pipe)
    groups = {
        "clip": group("clip", list(range(0, cfg.n_clips)), cfg.frames, False),
        "image": group("image", list(range(50_000_000, 50_000_000 + cfg.n_images)), 1, False),
        "pair": group("pair", list(range(90_000_000, 90_000_000 + cfg.n_pairs)), cfg.frames, True),
    }
    captions = sorted({c for g in groups.values() for c in g["captions"]} | {""})
    embeds = []
    for i in tqdm(range(0, len(captions), 64), desc="encode captions", dynamic_ncols=True):
        embeds.append(encode_prompts(pipe, captions[i : i + 64]).half().cpu())
    table = {c: i for i, c in enumerate(captions)}
    cache = {
        "groups": {
            k: {
                "caption_ids": torch.tensor([table[c] for c in g["captions"]]),
                **{n: t for n, t in g.items() if n != "captions"},  # latents (, conditions)
            }
            for k, g in groups.items()
        },
        "text": torch.cat(embeds),
        "empty_id": table[""],
    }
    torch.save(cache, path)
    (run / "cache_captions.json").write_text(json.dumps(captions))
    return cache


def _cache_to(cache: dict, device: torch.device) -> dict:
    return {
        "groups": {k: {n: t.to(device) for n, t in g.items()} for k, g in cache["groups"].items()},
        "text": cache["text"].to(device),
        "empty_id": cache["empty_id"],
    }


def famous_sample_weights(cache: dict, captions: list[str], weight: float) -> None:
    """Give each cache group a per-sample drawing weight, ``weight`` for a sample whose caption
    names a famous person and 1 for the others (``_transformer_batch`` then draws by weight).
    ``captions[i]`` is the text of caption id i (the run's cache_captions.json). The weights
    live on the CPU, with the generator that draws from them, wherever the cache is."""
    named = torch.tensor([any(name in c for name in FAMOUS) for c in captions])
    for group in cache["groups"].values():
        is_famous = named[group["caption_ids"].cpu()]
        group["weights"] = torch.where(is_famous, weight, 1.0)


def _transformer_batch(cache: dict, cfg: PretrainConfig, step: int):
    """The batch of step ``step``: one group (by size), random samples, caption dropout, noise
    and sigmas (and the samples' ``FirstFrame`` for --task i2v, else None), all drawn from a generator seeded by (seed, step); gathered where the cache is."""
    g = torch.Generator().manual_seed(cfg.seed * 7_777_777 + step)
    names = list(cache["groups"])
    sizes = torch.tensor([len(cache["groups"][n]["latents"]) for n in names], dtype=torch.float)
    name = names[int(torch.multinomial(sizes, 1, generator=g))]
    group = cache["groups"][name]
    device = group["latents"].device
    if "weights" in group:  # famous_weight: some samples drawn more often than others
        idx = torch.multinomial(group["weights"], cfg.batch, replacement=True, generator=g)
    else:
        idx = torch.randint(len(group["latents"]), (cfg.batch,), generator=g)
    x0 = group["latents"][idx.to(device)].float()  # (B, C, F, h, w)
    ids = group["caption_ids"][idx.to(device)].clone()
    drop = torch.rand(cfg.batch, generator=g) < cfg.caption_dropout
    ids[drop.to(device)] = cache["empty_id"]
    text = cache["text"][ids].float()  # (B, T, D)
    noise = torch.randn(x0.shape, generator=g).to(device)
    sigmas = sample_sigmas(cfg.batch, FLOW_SHIFT, g).to(device)
    first = None
    if "conditions" in group:  # --task i2v: each sample's own first frame
        first = FirstFrame(group["conditions"][idx.to(device)].float())
    return name, x0, text, noise, sigmas, first
