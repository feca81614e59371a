"""The LoRA training objective: the batch of a step (a pure function of seed and step) and the
flow-matching loss with prior preservation."""

from __future__ import annotations

import contextlib

import torch

from ..diffusion import flow_matching_loss, noisy_latents, sample_sigmas, transformer_inputs
from ..lora import (
    adapters_disabled,
)
from .config import TrainConfig
from .experts import SigmaDraw, TwoExperts


def expert_and_range(pipe, expert: str | None) -> tuple[torch.nn.Module, tuple[float, float]]:
    """The transformer to adapt and the sigma range it serves. Wan 2.2 A14B hands steps with
    t >= boundary_ratio * 1000 to ``transformer`` and the rest to ``transformer_2``; "both"
    adapts the two (``TwoExperts``, whose steps draw their own side of the range)."""
    boundary = getattr(pipe.config, "boundary_ratio", None)
    second = getattr(pipe, "transformer_2", None)
    if boundary is None or second is None:
        if expert == "low":
            raise ValueError(
                "--expert low needs a two-expert base (Wan 2.2 A14B); this one has one transformer"
            )
        return pipe.transformer, (0.0, 1.0)
    if expert == "both":
        return TwoExperts(pipe.transformer, second, boundary), (0.0, 1.0)
    return (pipe.transformer, (boundary, 1.0)) if expert == "high" else (second, (0.0, boundary))


def make_batch(
    cache: dict,
    cfg: TrainConfig,
    step: int,
    rank: int = 0,
    world: int = 1,
    sigma_range: tuple[float, float] | SigmaDraw = (0.0, 1.0),
) -> dict:
    """The global batch of ``step`` (a pure function of seed and step); this process's slice.

    A batch comes from one cache group, i.e. one shape (frames, bucket height and width),
    drawn in proportion to the groups' sizes; its samples are drawn within it. Its sigmas are
    the training distribution mapped into ``sigma_range`` (lo, hi), or ``sigma_range(batch,
    generator)`` when it is a draw of its own (``TwoExperts.sigmas_for_step``)."""
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    sizes = torch.tensor([len(gr["latents"]) for gr in cache["groups"]], dtype=torch.float)
    group = cache["groups"][int(torch.multinomial(sizes, 1, generator=g))]
    idx = torch.randint(len(group["latents"]), (cfg.batch,), generator=g)
    x0 = group["latents"][idx]
    cap = group["caption_ids"][idx]
    text = cache["text"][cap]  # (B, T, D), indexing already copies
    drop = torch.rand(cfg.batch, generator=g) < cfg.caption_dropout
    text[drop] = cache["empty"]
    noise = torch.randn(x0.shape, generator=g)
    draw = _sigma_draw(sigma_range, cfg.sigma_shift)
    sigmas = draw(cfg.batch, g)
    alone = torch.zeros(cfg.batch, dtype=torch.bool)
    # drawn last and only when asked, so the default batches stay as they were
    if cfg.trigger_only > 0:
        alone = (torch.rand(cfg.batch, generator=g) < cfg.trigger_only) & ~drop
        text[alone] = cache["trigger"]
    per = cfg.batch // world
    sl = slice(rank * per, (rank + 1) * per)
    batch = {"x0": x0[sl], "text": text[sl], "noise": noise[sl], "sigmas": sigmas[sl]}
    if "first" in group:  # image-to-video: each sample's given first frame
        batch["first"] = group["first"].select(idx[sl])
    if cfg.prior_preservation > 0 and "prior_latents" not in cache:  # the photos, re-captioned
        class_text = cache["class_text"][cap]
        class_text[alone] = cache["class_trigger"]
        if "stranger_text" in cache:  # drawn only when asked, as above
            other = (torch.rand(cfg.batch, generator=g) < cfg.prior_strangers) & ~alone
            which = torch.randint(cache["stranger_text"].shape[1], (cfg.batch,), generator=g)
            class_text[other] = cache["stranger_text"][cap, which][other]
        batch["class_text"] = class_text[sl]
    elif cfg.prior_preservation > 0:
        # the base's own samples, each under the class prompt it was drawn from
        pidx = torch.randint(len(cache["prior_latents"]), (cfg.batch,), generator=g)
        px0 = cache["prior_latents"][pidx]
        pnoise = torch.randn(px0.shape, generator=g)
        psig = draw(cfg.batch, g)
        batch.update(
            prior_x0=px0[sl],
            prior_noise=pnoise[sl],
            prior_sigmas=psig[sl],
            class_text=cache["class_text"][pidx][sl],
        )
    return batch


def _sigma_draw(sigma_range: tuple[float, float] | SigmaDraw, shift: float) -> SigmaDraw:
    if callable(sigma_range):
        return sigma_range
    lo, hi = sigma_range  # within this expert's range
    return lambda n, g: lo + (hi - lo) * sample_sigmas(n, shift, g)


def training_loss(model, batch: dict, cfg: TrainConfig, teacher=None) -> torch.Tensor:
    """The flow-matching loss on the person's photos, plus (optionally) prior preservation:
    on the trigger-free class prompt the trained model should predict what the base model does.
    The base is ``model`` with its adapters off, or ``teacher`` (a frozen copy of the base, for
    training without adapters: full fine-tuning)."""
    x0, text, sigmas, noise = batch["x0"], batch["text"], batch["sigmas"], batch["noise"]
    first = batch.get("first")  # image-to-video: the given first frames
    own = (x0, text, sigmas, noise, noise - x0, first)
    if cfg.prior_preservation <= 0:
        return flow_matching_loss(
            model, *own[:4], first=first, min_snr_gamma=cfg.min_snr_gamma
        ).mean()
    if "prior_x0" in batch:  # generated class samples: their own flow-matching target
        px0, pnoise = batch["prior_x0"], batch["prior_noise"]
        kept = (px0, batch["class_text"], batch["prior_sigmas"], pnoise, pnoise - px0, None)
        return _own_plus_kept(model, own, kept, cfg.prior_preservation, cfg.min_snr_gamma)

    xt = noisy_latents(x0, noise, sigmas)
    base = (
        contextlib.nullcontext() if teacher is not None else adapters_disabled(unwrap_model(model))
    )
    with torch.no_grad(), base:
        prior = (model if teacher is None else teacher)(
            **transformer_inputs(xt, sigmas, first),
            encoder_hidden_states=batch["class_text"],
            return_dict=False,
        )[0]
    kept = (x0, batch["class_text"], sigmas, noise, prior, first)
    return _own_plus_kept(model, own, kept, cfg.prior_preservation, cfg.min_snr_gamma)


def _own_plus_kept(
    model, own: tuple, kept: tuple, weight: float, min_snr_gamma: float = 0.0
) -> torch.Tensor:
    """mean loss on ``own`` + weight x mean loss on ``kept``, each (x0, text, sigmas, noise,
    target velocity, first frame or None). One forward over both halves ((2B, ...)) when their
    shapes agree: the same objective, as samples never interact, at about half the per-call
    overhead; two when they differ (a batch of clips beside one-frame class samples)."""
    if own[0].shape[1:] != kept[0].shape[1:]:
        a, b = (
            flow_matching_loss(
                model, *p[:4], target_velocity=p[4], first=p[5], min_snr_gamma=min_snr_gamma
            ).mean()
            for p in (own, kept)
        )
        return a + weight * b
    n = len(own[0])
    x0, text, sigmas, noise, target = (torch.cat(t) for t in zip(own[:5], kept[:5], strict=True))
    first = own[5].cat(kept[5]) if own[5] is not None else None
    per_sample = flow_matching_loss(
        model,
        x0,
        text,
        sigmas,
        noise,
        target_velocity=target,
        first=first,
        min_snr_gamma=min_snr_gamma,
    )
    return per_sample[:n].mean() + weight * per_sample[n:].mean()


def unwrap_model(model):
    return getattr(model, "module", model)
