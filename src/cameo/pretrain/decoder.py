"""The decoder stage: the VAE's decoder fine-tuned on full-length clips with the encoder frozen,
so the latents (and a transformer trained on them) stay valid. Variants, each in its own stage
folder so their checkpoints never mix: ``decoder`` (the VAE stage's decoder), ``decoder-w<width>``
(a widened decoder, ``--decoder-width``) and ``<either>-denoised`` (refined on latents that a
transformer redraws from part-way noise, ``--decoder-denoiser``)."""

from __future__ import annotations

import sys
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan

from .. import models
from ..diffusion import euler_flow_sample, guided_velocity, noisy_latents
from ..generation import GenerateConfig
from ..models import encode_prompts, load_pipeline, resolve_base
from ..training import checkpoint as ckpt
from .adversarial import (
    PatchDiscriminator,
    adaptive_weight,
    discriminator_hinge_loss,
    generator_loss,
)
from .config import PretrainConfig
from .data import _captioned_clips, _full_clips
from .stage import _psnr, pick_device, run_stage

DENOISED = "-denoised"  # suffix of a decoder stage refined on redrawn latents
ADVERSARIAL = "-adversarial"  # suffix of a decoder stage refined against a discriminator


class PretrainSetupError(ValueError):
    """A stage asked for something the run cannot give (a missing stage to refine, a
    denoiser trained on other latents); raised before the run's files change."""


def decoder_stage_name(cfg: PretrainConfig) -> str:
    """The folder of the decoder stage's checkpoints: ``decoder``, or ``decoder-w<width>`` for a
    widened decoder, so its checkpoints never mix with the narrower ones it grew from; either
    with ``-denoised`` when ``--decoder-denoiser`` trains it on redrawn latents."""
    wide = cfg.decoder_width and cfg.decoder_width != cfg.vae.base_dim
    name = f"decoder-w{cfg.decoder_width}" if wide else "decoder"
    name = f"{name}{DENOISED}" if cfg.decoder_denoiser else name
    return f"{name}{ADVERSARIAL}" if cfg.decoder_adversarial > 0 else name


def _stage_width(stage: str) -> int:
    """The decoder width a stage folder holds: ``decoder-w32`` -> 32; 0 for the others."""
    if not stage.startswith("decoder-w"):
        return 0
    return int(stage.removeprefix("decoder-w").removesuffix(ADVERSARIAL).removesuffix(DENOISED))


def _load_finished_vae(cfg: PretrainConfig, run: Path, stage: str = "vae"):
    """The VAE of ``stage``'s latest checkpoint (the VAE stage's, or a decoder stage's over the
    same encoder), in eval mode."""
    last = ckpt.latest(run / stage)
    if last is None:
        raise FileNotFoundError(f"no VAE checkpoint in {run / 'vae'}; run the vae stage first")
    vae = cfg.vae.build()
    if _stage_width(stage):  # a widened decoder stage's checkpoint: its shape first
        vae = models.widen_decoder(vae, _stage_width(stage))
    vae.load_state_dict(ckpt.load(last)[0])
    return vae.eval()


def _grown_decoder(cfg: PretrainConfig, run: Path):
    """The VAE a ``--decoder-width`` stage starts from: the run's widest finished decoder
    narrower than it (a ``decoder-w*`` stage, else ``decoder``, else the VAE stage's), grown
    to the new width. Denoised stages are not grown: they are a last step on one width."""
    narrower = [
        d.name
        for d in run.glob("decoder*")
        if d.is_dir()
        and not d.name.endswith((DENOISED, ADVERSARIAL))
        and ckpt.latest(d)
        and _stage_width(d.name) < cfg.decoder_width
    ]
    source = max(narrower, key=_stage_width, default="vae")
    print(f"growing the decoder of {source} to width {cfg.decoder_width}", file=sys.stderr)
    return models.widen_decoder(
        _load_finished_vae(cfg, run, source), cfg.decoder_width, seed=cfg.seed
    )


def _refined_stage(cfg: PretrainConfig) -> str:
    """The decoder stage a ``--decoder-denoiser`` stage refines: ``decoder`` or
    ``decoder-w<width>`` (the configured stage itself when there is no denoiser)."""
    return decoder_stage_name(replace(cfg, decoder_denoiser="", decoder_adversarial=0.0))


def _denoised_source(cfg: PretrainConfig, run: Path) -> str:
    """The stage whose checkpoint a ``--decoder-denoiser`` stage starts from: the stage it
    refines, or for ``decoder`` without a checkpoint the VAE stage."""
    source = _refined_stage(cfg)
    if ckpt.latest(run / source) is None:
        if _stage_width(source):
            raise PretrainSetupError(
                f"{run / source} has no checkpoint: train the --decoder-width stage before "
                "refining it with --decoder-denoiser"
            )
        source = "vae"
    return source


def _latest_decoder(cfg: PretrainConfig, run: Path, vae):
    """``vae`` with the decoder of the run's decoder stage, for export: the configured stage's
    (``--decoder-width``, ``--decoder-denoiser``) when it has a checkpoint, else the stage it
    refines, else the plain decoder stage's, else ``vae``'s own. The encoder and latent
    statistics stay ``vae``'s."""
    for stage in dict.fromkeys((decoder_stage_name(cfg), _refined_stage(cfg), "decoder")):
        last = ckpt.latest(run / stage)
        if last is None:
            continue
        if _stage_width(stage):  # the wide shape first; its weights come from the checkpoint
            vae = models.widen_decoder(vae, _stage_width(stage), seed=cfg.seed)
        decoder = {
            k: v
            for k, v in ckpt.load(last)[0].items()
            if k.startswith(("decoder.", "post_quant_conv."))
        }
        vae.load_state_dict(decoder, strict=False)
        break
    return vae


def _check_same_encoder(theirs, ours, source: str) -> None:
    """Refuse a denoiser whose VAE encodes differently from the run's: its transformer was
    trained on other latents. The shipped VAE is fp16, hence the tolerance."""
    a, b = theirs.state_dict(), ours.state_dict()
    keys = [k for k in b if k.startswith(("encoder.", "quant_conv."))]
    same = all(
        k in a
        and a[k].shape == b[k].shape
        and torch.allclose(a[k].float().cpu(), b[k].float().cpu(), rtol=1e-2, atol=1e-3)
        for k in keys
    )
    if not same:
        raise PretrainSetupError(
            f"--decoder-denoiser {source}: its VAE encoder is not this run's, so its transformer "
            "draws latents that this decoder never decodes; pick the pipeline exported from this run"
        )


def check_denoiser(cfg: PretrainConfig, run: Path) -> None:
    """Refuse a ``--decoder-denoiser`` stage before it writes anything: the decoder it refines
    must exist and the denoiser's VAE must encode as the run's does."""
    if cfg.stage != "decoder" or not cfg.decoder_denoiser:
        return
    theirs = AutoencoderKLWan.from_pretrained(resolve_base(cfg.decoder_denoiser) / "vae")
    ours = _load_finished_vae(cfg, run, _denoised_source(cfg, run))
    _check_same_encoder(theirs, ours, cfg.decoder_denoiser)


def load_redraw(cfg: PretrainConfig, device: torch.device):
    """``redraw(z, captions, generator)``: VAE latents (B, C, F, h, w) noised to a sigma drawn
    from the sampler's schedule (at most ``--decoder-denoise-sigma``, or else the schedule's
    last nonzero one), then sampled back to 0 by
    the denoiser's transformer with the captions and the default guidance of ``cameo
    generate``: latents with generation's own errors, over the content of the clip. A share
    ``--decoder-clean-share`` of calls returns ``z`` unchanged. The denoiser must encode as
    the run's VAE does (``check_denoiser``, which ``run_pretrain`` calls before the stage)."""
    pipe = load_pipeline(cfg.decoder_denoiser, device=str(device))
    transformer = pipe.transformer.eval().requires_grad_(False)
    defaults = GenerateConfig()
    pipe.scheduler.set_timesteps(defaults.steps)
    sigmas = pipe.scheduler.sigmas.float().to(device)  # (steps + 1,), from ~1 down to 0
    first = int((sigmas[:-1] > cfg.decoder_denoise_sigma).sum().clamp(max=len(sigmas) - 2))
    mean = torch.tensor(pipe.vae.config.latents_mean, device=device).view(1, -1, 1, 1, 1)
    std = torch.tensor(pipe.vae.config.latents_std, device=device).view(1, -1, 1, 1, 1)
    empty = encode_prompts(pipe, [""])  # (1, T, D), the pipeline's negative prompt

    def redraw(z: torch.Tensor, captions: list[str], g: torch.Generator) -> torch.Tensor:
        if float(torch.rand((), generator=g)) < cfg.decoder_clean_share:
            return z
        k = int(torch.randint(first, len(sigmas) - 1, (), generator=g))
        x0 = (z - mean) / std  # the transformer's unit-scale latents
        noise = torch.randn(x0.shape, generator=g).to(device)
        xt = noisy_latents(x0, noise, sigmas[k].expand(len(z)))
        text = encode_prompts(pipe, captions)  # (B, T, D)
        velocity = guided_velocity(transformer, text, empty.expand_as(text), defaults.guidance)
        return euler_flow_sample(velocity, xt, sigmas[k:]) * std + mean

    return redraw


def finetune_decoder(cfg: PretrainConfig, run: Path, steps: int):
    """Teach the decoder full-length clips with the encoder frozen, so latents (and the
    transformer trained on them) stay valid. Needed by runs whose VAE stage saw only 5-frame
    clips: its causal temporal cache did not carry to 17 frames (reconstruction fell from
    ~24 dB at frame 4 to ~10 dB at frame 16). With ``--decoder-width`` it first grows the
    decoder wider (models.widen_decoder) and trains that in its own stage folder. With
    ``--decoder-denoiser`` it refines the run's decoder on latents redrawn by a transformer
    (``load_redraw``), still against the clip's own pixels. With ``--decoder-adversarial`` it
    refines the run's decoder against a patch discriminator as well (``adversarial``).
    Returns None when the time budget or Ctrl+C stopped it (a checkpoint is saved)."""
    device = pick_device(cfg.device)
    stage = decoder_stage_name(cfg)
    refined = cfg.decoder_denoiser or cfg.decoder_adversarial > 0
    if refined:
        source = _denoised_source(cfg, run)
        how = "redrawn latents" if cfg.decoder_denoiser else "a patch discriminator"
        print(f"refining the decoder of {source} against {how}", file=sys.stderr)
        vae = _load_finished_vae(cfg, run, source)
    elif stage != "decoder":
        vae = _grown_decoder(cfg, run)
    else:
        vae = _load_finished_vae(cfg, run)
    vae = vae.to(device)
    vae.requires_grad_(False)
    trainable = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    if cfg.decoder_adversarial > 0:  # a submodule while training: checkpointed with the VAE
        torch.manual_seed(cfg.seed + 2)
        vae.add_module("discriminator", PatchDiscriminator().to(device))
        trainable += list(vae.discriminator.parameters())
    for p in trainable:
        p.requires_grad_(True)
    redraw = load_redraw(cfg, device) if cfg.decoder_denoiser else None

    def step_loss(batch) -> dict:
        x, captions, step = batch if refined else (batch, None, None)
        x = x.to(device, non_blocking=True)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean  # (B, C, F', h, w)
            if redraw is not None:
                z = redraw(z, captions, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
        rec = vae.decode(z).sample
        mse = ((rec - x) ** 2).mean()
        loss = (rec - x).abs().mean() + mse
        logs = {"psnr_f17": _psnr(mse)}
        if cfg.decoder_adversarial > 0:
            loss, more = _with_discriminator(vae, x, rec, loss, step, cfg)
            logs.update(more)
        else:
            loss.backward()
        return {"loss": loss.detach(), **logs}

    finished = run_stage(
        cfg,
        run,
        stage,
        vae,
        trainable,
        steps=steps,
        minutes=0,
        lr=cfg.decoder_lr,
        warmup=10,
        weight_decay=0.01,
        make_batch=partial(_captioned_clips if refined else _full_clips, cfg, cfg.decoder_batch),
        step_loss=step_loss,
    )
    if cfg.decoder_adversarial > 0:  # the VAE ships without its judge
        del vae.discriminator
    return vae.eval() if finished else None


def _with_discriminator(vae, x, rec, pixel, step: int, cfg: PretrainConfig):
    """Backward of one adversarial decoder step; returns the decoder's loss and what to log.

    The decoder minimises the pixel losses plus, from ``--decoder-adversarial-start`` on,
    ``--decoder-adversarial`` x the adaptive weight x the generator loss (the discriminator's
    weights frozen for it); the discriminator minimises its hinge loss on the clip's frames
    against the decoded ones (the decoder's output detached)."""
    disc = vae.discriminator
    logs = {}
    if step >= cfg.decoder_adversarial_start:
        disc.requires_grad_(False)
        fooled = generator_loss(disc(rec))
        weight = adaptive_weight(pixel, fooled, vae.decoder.conv_out.weight)
        disc.requires_grad_(True)
        loss = pixel + cfg.decoder_adversarial * weight * fooled
        logs.update(generator=fooled.detach(), adaptive_weight=weight)
    else:
        loss = pixel
    loss.backward()
    judged = discriminator_hinge_loss(disc(x), disc(rec.detach()))
    judged.backward()
    logs["discriminator"] = judged.detach()
    return loss, logs


def decoder_stage(cfg: PretrainConfig, run: Path) -> Path | None:
    """Fine-tune the decoder, then rewrite the exported pipeline's VAE (same latent statistics).
    Before the transformer stage has exported a pipeline, only the fine-tuning runs: the
    encoder is frozen, so the transformer trains on the same latents, and its export takes
    the fine-tuned decoder."""
    exported = run / "cameo-tiny"
    vae = finetune_decoder(cfg, run, cfg.decoder_steps)
    if vae is None:  # stopped early: the export keeps its decoder until a resume ends
        return None
    if not (exported / "vae").is_dir():
        print("decoder fine-tuned; the transformer stage's export will use it", file=sys.stderr)
        return None
    stats = AutoencoderKLWan.load_config(exported / "vae")
    vae.register_to_config(latents_mean=stats["latents_mean"], latents_std=stats["latents_std"])
    vae.to(torch.float16).save_pretrained(exported / "vae", safe_serialization=True)
    return exported
