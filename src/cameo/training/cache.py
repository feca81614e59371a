"""What training reads from the dataset, computed once: normalised VAE latents and text
embeddings of the captions, their class prompts, and the prior-preservation material."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import DatasetReport
from ..models import (
    encode_prompts,
    frames_to_vae_input,
    text_tokens_for,
)
from ..models.first_frame import encode_first_frame, first_frame_batch, is_image_to_video
from ..world import strangers
from .config import TrainConfig
from .disk_cache import DiskCache


def build_cache(
    pipe, report: DatasetReport, cfg: TrainConfig, store: DiskCache | None = None
) -> dict:
    """Latents (normalised as the pipeline expects) and text embeddings, computed once, or
    read from ``store`` (the run's disk cache) where an earlier run computed them.

    Items are grouped by their shape (frames, height, width): a clip window apart from photos,
    and each aspect-ratio bucket apart, so that every batch stacks samples of one shape."""
    vae = pipe.vae
    store = store or DiskCache(None, Path("."), vae.dtype, 0)

    def encode(frames: np.ndarray) -> torch.Tensor:
        x = frames_to_vae_input(frames)[None]  # (1, 3, F, H, W)
        with torch.no_grad():
            z = vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mean.float().cpu()
        return (z - mean) / std  # (1, C, F', h, w)

    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    groups: dict[tuple[int, int, int], dict] = {}  # (F, H, W) -> latents and captions
    stills = [(it.frames.repeat(cfg.still_clips, 0), it.caption) for it in report.items
              if cfg.still_clips and it.frames.shape[0] == 1]  # fmt: skip
    image_to_video = is_image_to_video(pipe)
    for frames, caption in [*((it.frames, it.caption) for it in report.items), *stills]:
        g = groups.setdefault(frames.shape[:3], {"latents": [], "captions": [], "first": []})
        g["latents"].append(store.latent(frames, encode))
        g["captions"].append(caption)
        if image_to_video:  # the clip's first frame, as the pipeline gives it
            g["first"].append(store.first_frame(frames, lambda f: encode_first_frame(pipe, f)))
    captions = sorted({c for g in groups.values() for c in g["captions"]})
    class_prompts = [class_prompt(c, cfg.trigger, cfg.class_word) for c in captions]
    texts = [*captions, *class_prompts, "", cfg.trigger, cfg.class_word]
    embeds = store.texts(texts, lambda t: _encode_all(pipe, t))
    index = {c: i for i, c in enumerate(captions)}
    prior = {}
    if cfg.prior_preservation > 0 and cfg.prior_source == "generated" and image_to_video:
        raise ValueError(
            "--prior-source generated draws text-to-video samples; an image-to-video base "
            "keeps its prior with --prior-source photos"
        )
    if cfg.prior_preservation > 0 and cfg.prior_source == "generated":
        prior = {
            "prior_latents": base_samples(pipe, class_prompts, cfg.height, cfg.width, cfg.seed)
        }
    elif cfg.prior_preservation > 0 and cfg.prior_strangers > 0:
        prior = {"stranger_text": stranger_embeddings(pipe, captions, cfg, store)}
    return {
        **prior,
        "groups": [
            {
                "latents": torch.cat(g["latents"]),
                "caption_ids": torch.tensor([index[c] for c in g["captions"]]),
                **({"first": first_frame_batch(g["first"])} if g["first"] else {}),
            }
            for _, g in sorted(groups.items())
        ],
        "text": embeds[: len(captions)],
        "class_text": embeds[len(captions) : 2 * len(captions)],
        "empty": embeds[2 * len(captions)],
        "trigger": embeds[-2],  # the trigger alone, and its class prompt (--trigger-only)
        "class_trigger": embeds[-1],
    }


def _encode_all(pipe, texts: list[str]) -> torch.Tensor:
    """Text embeddings (N, T, D) on the CPU, 64 prompts a call."""
    return torch.cat(
        [encode_prompts(pipe, texts[i : i + 64]).float().cpu() for i in range(0, len(texts), 64)]
    )


STRANGERS_PER_CAPTION = 4


def stranger_embeddings(
    pipe, captions: list[str], cfg: TrainConfig, store: DiskCache | None = None
) -> torch.Tensor:
    """Each caption with the person replaced by one of the base model's people, in
    ``STRANGERS_PER_CAPTION`` variants: (n_captions, K, T, D). The same scene, someone else."""

    k = STRANGERS_PER_CAPTION
    who = strangers(len(captions) * k, cfg.seed)
    texts = [
        class_prompt(c, cfg.trigger, who[i * k + j])
        for i, c in enumerate(captions)
        for j in range(k)
    ]
    encode = lambda t: _encode_all(pipe, t)  # noqa: E731
    embeds = store.texts(texts, encode) if store else encode(texts)  # (n_captions * K, T, D)
    return embeds.view(len(captions), k, *embeds.shape[1:])


def base_samples(pipe, prompts: list[str], height: int, width: int, seed: int) -> torch.Tensor:
    """The base model's own one-frame samples of ``prompts``, as the normalised latents the
    transformer sees (N, C, 1, h, w): DreamBooth's class images (Ruiz et al., 2023), made
    before any adapter exists, and never decoded."""
    out = []
    for k, prompt in enumerate(prompts):
        gen = torch.Generator("cpu").manual_seed(seed * 7919 + k)
        with torch.no_grad():
            z = pipe(
                prompt=prompt,
                height=height,
                width=width,
                num_frames=1,
                num_inference_steps=20,
                guidance_scale=5.0,
                generator=gen,
                max_sequence_length=text_tokens_for(pipe),
                output_type="latent",
            ).frames
        out.append(z.float().cpu())
    return torch.cat(out)


def class_prompt(caption: str, trigger: str, class_word: str) -> str:
    """The caption with the person's name replaced by the class (for prior preservation)."""
    out = caption.replace(f"{trigger}, ", f"{class_word}, ").replace(trigger, class_word)
    return out
