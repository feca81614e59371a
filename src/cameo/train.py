"""``cameo train``: clone a person into the base model with a LoRA.

The base stays frozen; PEFT adds the low-rank layers; the loss is ``flow_matching_loss``, the
same function pretraining uses. Latents and text embeddings are computed once, so the VAE and
text encoder stay out of the loop. The batch at step s is a pure function of (seed, s), so a
resumed run continues exactly where it stopped, and under ``torchrun``/``accelerate launch``
each process takes its slice of the same global batch.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm import tqdm

from . import checkpoint as ckpt
from . import fast
from .data import DatasetReport, scan_folder
from .diffusion import flow_matching_loss, lr_at, sample_sigmas
from .lora import (
    DEFAULT_TARGETS,
    LoraSpec,
    adapter_state_dict,
    adapters_disabled,
    add_lora,
    base_hash,
    load_adapter,
    lora_parameters,
    parameter_counts,
    save_lora_file,
)
from .models import (
    FLOW_SHIFT,
    encode_prompts,
    frames_to_vae_input,
    load_pipeline,
    resolve_base,
    text_tokens_for,
)

PRIOR_SOURCES = ("photos", "generated")


@dataclass
class TrainConfig:
    """Options of ``cameo train``; the resolved config is written beside the LoRA."""

    # Settings added after runs were saved without them: the value that trains as the code
    # before them did, for a --resume of such a run (its config.json lacks the key).
    BEFORE_ADDED: ClassVar[dict[str, Any]] = {"prior_strangers": 0.0}

    data: str = field(default="", metadata={"help": "folder of photos (and clips) with captions"})
    name: str = field(default="subject", metadata={"help": "name of the LoRA file"})
    trigger: str = field(default="", metadata={"help": "word that names the person in prompts"})
    out: str = field(default="runs/lora", metadata={"help": "output folder"})
    base: str = field(
        default="cameo-tiny",
        metadata={"help": "base model: cameo-tiny or a Wan diffusers directory"},
    )
    height: int = field(
        default=64, metadata={"help": "training height: photos are resized and cropped to it"}
    )
    width: int = field(default=64, metadata={"help": "training width (multiple of 16)"})
    rank: int = field(default=16, metadata={"help": "LoRA rank r"})
    alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (scale alpha/r)"})
    targets: str = field(
        default=DEFAULT_TARGETS, metadata={"help": "adapted modules (name suffixes)"}
    )
    ffn: bool = field(default=False, metadata={"help": "also adapt the feed-forward layers"})
    rslora: bool = field(default=False, metadata={"help": "rank-stabilised LoRA scaling"})
    expert: str = field(
        default="high",
        metadata={
            "help": "Wan 2.2 A14B: which expert to adapt, high (noisy steps, `transformer`) or low (`transformer_2`)"
        },
    )
    orthogonal_slot: int = field(
        default=-1,
        metadata={
            "help": "composition-ready training: freeze A to this slot of a shared orthogonal basis (-1 = off)"
        },
    )
    orthogonal_seed: int = field(
        default=0,
        metadata={
            "help": "seed of the shared orthogonal basis (the same for people who will be combined)"
        },
    )
    steps: int = field(
        default=200,
        metadata={
            "help": "optimiser steps; identity plateaus after about 100 on cameo-tiny, and 200 "
            "trains in under 2 minutes on a 2-core CPU (docs/quality.md)"
        },
    )
    batch: int = field(default=8, metadata={"help": "global batch size"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate (AdamW)"})
    schedule: str = field(default="cosine", metadata={"help": "cosine | constant (after warmup)"})
    warmup: int = field(default=25, metadata={"help": "warmup steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    seed: int = field(default=0, metadata={"help": "seed of batches, noise and initialisation"})
    caption_dropout: float = field(default=0.05, metadata={"help": "share of empty prompts"})
    sigma_shift: float = field(
        default=FLOW_SHIFT,
        metadata={
            "help": "shift of the logit-normal training sigmas (SD3, eq. 23): above 1 spends more "
            "steps at high noise, where layout and face shape form; below 1 at low noise, where "
            "fine details do; the default is the base's own, shared with sampling"
        },
    )
    still_clips: int = field(
        default=0,
        metadata={
            "help": "also train on each photo as a still clip of this many frames (4k+1; 0 = off), "
            "so that the latent frames after the first, which photos never fill, see the person"
        },
    )
    trigger_only: float = field(
        default=0.0,
        metadata={
            "help": "share of samples captioned with the trigger alone, so that the trigger, not "
            "the caption's description of the person, must carry their look"
        },
    )
    prior_preservation: float = field(
        default=0.5,
        metadata={
            "help": "weight of the base model's prediction for the trigger-free class prompt (0 = off); "
            "0.5 cut leakage from +0.13 to +0.02 on cameo-tiny (docs/quality.md)"
        },
    )
    class_word: str = field(
        default="a person",
        metadata={
            "help": "replaces the trigger in class prompts (those not given to strangers, see "
            "--prior-strangers, and those of --trigger-only samples)"
        },
    )
    prior_strangers: float = field(
        default=1.0,
        metadata={
            "help": "share of prior-preservation samples whose class prompt names someone else "
            "(one of the base model's people, described: 'a woman with a brown bob') instead of "
            "the class word, so the LoRA learns to leave other people as the base draws them; "
            "1.0 cut leakage from +0.055 to +0.001 on cameo-tiny (docs/quality.md); with "
            "--prior-source generated it does not apply"
        },
    )
    prior_source: str = field(
        default="photos",
        metadata={
            "help": "what prior preservation keeps: photos = the base model's prediction on the "
            "person's own noised photos under the class prompt (differential output "
            "preservation); generated = the base model's own samples of the class prompts, "
            "made once before training (DreamBooth's class images)"
        },
    )
    ema: float = field(
        default=0.0, metadata={"help": "EMA decay of the LoRA weights saved at the end (0 = off)"}
    )
    grad_checkpointing: bool = field(
        default=False, metadata={"help": "recompute activations in backward to save memory"}
    )
    mixed_precision: str = field(default="no", metadata={"help": "no | bf16 | fp16 (bf16 on GPU)"})
    fast: bool = field(
        default=True,
        metadata={
            "help": "fast path (cameo.fast): same maths, fewer operations; --no-fast runs the plain diffusers + PEFT forward"
        },
    )
    threads: int = field(
        default=0,
        metadata={
            "help": "CPU threads for training; 0 = auto: 1 for small models like cameo-tiny (more only add waits, see docs/performance.md)"
        },
    )
    checkpoint_every: int = field(
        default=100, metadata={"help": "steps between resumable checkpoints"}
    )
    validate_every: int = field(
        default=100,
        metadata={"help": "steps between identity validations (0 = only at the end, -1 = never)"},
    )
    early_stop: int = field(
        default=0,
        metadata={"help": "stop after this many validations without identity gain (0 = never)"},
    )
    min_photos: int = field(default=4, metadata={"help": "refuse to train on fewer usable photos"})
    init_from: str = field(default="", metadata={"help": "start from this LoRA file"})
    log_with: str = field(
        default="tensorboard",
        metadata={"help": "Accelerate tracker: tensorboard, wandb, ... or none"},
    )
    overwrite: bool = field(
        default=False, metadata={"help": "replace an existing LoRA of the same name"}
    )

    def lora_spec(self) -> LoraSpec:
        return LoraSpec(self.rank, self.alpha, self.targets, self.ffn, self.rslora)

    def validate(self) -> None:
        if not self.data:
            raise ValueError("--data is required: a folder of photos with captions")
        if not self.trigger.strip() or len(self.trigger.split()) != 1:
            raise ValueError(
                "--trigger must be one word that names the person, e.g. --trigger mike"
            )
        for name in ("steps", "batch", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if not 0 < self.lr < 1:
            raise ValueError(f"--lr must be in (0, 1), not {self.lr}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError("--schedule must be cosine or constant")
        if self.expert not in ("high", "low"):
            raise ValueError("--expert must be high or low")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError("--mixed-precision must be no, bf16 or fp16")
        if not 0 <= self.ema < 1 or not 0 <= self.caption_dropout < 1:
            raise ValueError("--ema and --caption-dropout must be in [0, 1)")
        if not 0 < self.sigma_shift <= 20:
            raise ValueError(f"--sigma-shift must be in (0, 20], not {self.sigma_shift}")
        if not 0 <= self.trigger_only < 1:
            raise ValueError("--trigger-only must be in [0, 1)")
        if self.prior_source not in PRIOR_SOURCES:
            raise ValueError(f"--prior-source must be {' or '.join(PRIOR_SOURCES)}")
        if self.still_clips and (self.still_clips < 5 or (self.still_clips - 1) % 4):
            raise ValueError("--still-clips must be 0 or 4k+1 frames (5, 9, 13, 17, ...)")
        if not 0 <= self.prior_strangers <= 1:
            raise ValueError("--prior-strangers must be in [0, 1]")
        if self.height % 16 or self.width % 16 or min(self.height, self.width) < 16:
            raise ValueError("--height and --width must be multiples of 16")
        self.lora_spec().validate()

    @classmethod
    def from_toml(cls, path: Path, **overrides) -> TrainConfig:
        """Read a TOML config (keys as the flags, with _ or -), then apply overrides."""
        raw = tomllib.loads(Path(path).read_text())
        raw = {k.replace("-", "_"): v for k, v in raw.get("train", raw).items()}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown settings {', '.join(unknown)}")
        return cls(**{**raw, **overrides})


# ------------------------------------------------------------------------------ the cache


def build_cache(pipe, report: DatasetReport, cfg: TrainConfig) -> dict:
    """Latents (normalised as the pipeline expects) and text embeddings, computed once."""
    vae = pipe.vae
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    groups: dict[int, dict] = {}
    stills = [(it.frames.repeat(cfg.still_clips, 0), it.caption) for it in report.items
              if cfg.still_clips and it.frames.shape[0] == 1]  # fmt: skip
    for frames, caption in [*((it.frames, it.caption) for it in report.items), *stills]:
        x = frames_to_vae_input(frames)[None]  # (1, 3, F, H, W)
        with torch.no_grad():
            z = vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mean.float().cpu()
        g = groups.setdefault(frames.shape[0], {"latents": [], "captions": []})
        g["latents"].append((z - mean) / std)
        g["captions"].append(caption)
    captions = sorted({c for g in groups.values() for c in g["captions"]})
    class_prompts = [class_prompt(c, cfg.trigger, cfg.class_word) for c in captions]
    texts = [*captions, *class_prompts, "", cfg.trigger, cfg.class_word]
    embeds = _encode_all(pipe, texts)
    index = {c: i for i, c in enumerate(captions)}
    prior = {}
    if cfg.prior_preservation > 0 and cfg.prior_source == "generated":
        prior = {
            "prior_latents": base_samples(pipe, class_prompts, cfg.height, cfg.width, cfg.seed)
        }
    elif cfg.prior_preservation > 0 and cfg.prior_strangers > 0:
        prior = {"stranger_text": stranger_embeddings(pipe, captions, cfg)}
    return {
        **prior,
        "groups": [
            {
                "latents": torch.cat(g["latents"]),
                "caption_ids": torch.tensor([index[c] for c in g["captions"]]),
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


def stranger_embeddings(pipe, captions: list[str], cfg: TrainConfig) -> torch.Tensor:
    """Each caption with the person replaced by one of the base model's people, in
    ``STRANGERS_PER_CAPTION`` variants: (n_captions, K, T, D). The same scene, someone else."""
    from .world import strangers

    k = STRANGERS_PER_CAPTION
    who = strangers(len(captions) * k, cfg.seed)
    texts = [
        class_prompt(c, cfg.trigger, who[i * k + j])
        for i, c in enumerate(captions)
        for j in range(k)
    ]
    embeds = _encode_all(pipe, texts)  # (n_captions * K, T, D)
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


def expert_and_range(pipe, expert: str) -> tuple[torch.nn.Module, tuple[float, float]]:
    """The transformer to adapt and the sigma range it serves. Wan 2.2 A14B hands steps with
    t >= boundary_ratio * 1000 to ``transformer`` and the rest to ``transformer_2``."""
    boundary = getattr(pipe.config, "boundary_ratio", None)
    second = getattr(pipe, "transformer_2", None)
    if boundary is None or second is None:
        if expert == "low":
            raise ValueError(
                "--expert low needs a two-expert base (Wan 2.2 A14B); this one has one transformer"
            )
        return pipe.transformer, (0.0, 1.0)
    return (pipe.transformer, (boundary, 1.0)) if expert == "high" else (second, (0.0, boundary))


def make_batch(
    cache: dict,
    cfg: TrainConfig,
    step: int,
    rank: int = 0,
    world: int = 1,
    sigma_range: tuple[float, float] = (0.0, 1.0),
) -> dict:
    """The global batch of ``step`` (a pure function of seed and step); this process's slice."""
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
    lo, hi = sigma_range
    # within this expert's range
    sigmas = lo + (hi - lo) * sample_sigmas(cfg.batch, cfg.sigma_shift, g)
    alone = torch.zeros(cfg.batch, dtype=torch.bool)
    # drawn last and only when asked, so the default batches stay as they were
    if cfg.trigger_only > 0:
        alone = (torch.rand(cfg.batch, generator=g) < cfg.trigger_only) & ~drop
        text[alone] = cache["trigger"]
    per = cfg.batch // world
    sl = slice(rank * per, (rank + 1) * per)
    batch = {"x0": x0[sl], "text": text[sl], "noise": noise[sl], "sigmas": sigmas[sl]}
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
        psig = lo + (hi - lo) * sample_sigmas(cfg.batch, cfg.sigma_shift, g)
        batch.update(
            prior_x0=px0[sl],
            prior_noise=pnoise[sl],
            prior_sigmas=psig[sl],
            class_text=cache["class_text"][pidx][sl],
        )
    return batch


def training_loss(model, batch: dict, cfg: TrainConfig, teacher=None) -> torch.Tensor:
    """The flow-matching loss on the person's photos, plus (optionally) prior preservation:
    on the trigger-free class prompt the trained model should predict what the base model does.
    The base is ``model`` with its adapters off, or ``teacher`` (a frozen copy of the base, for
    training without adapters: full fine-tuning)."""
    x0, text, sigmas, noise = batch["x0"], batch["text"], batch["sigmas"], batch["noise"]
    own = (x0, text, sigmas, noise, noise - x0)
    if cfg.prior_preservation <= 0:
        return flow_matching_loss(model, *own[:4]).mean()
    if "prior_x0" in batch:  # generated class samples: their own flow-matching target
        px0, pnoise = batch["prior_x0"], batch["prior_noise"]
        kept = (px0, batch["class_text"], batch["prior_sigmas"], pnoise, pnoise - px0)
        return _own_plus_kept(model, own, kept, cfg.prior_preservation)
    from .diffusion import noisy_latents

    xt = noisy_latents(x0, noise, sigmas)
    base = contextlib.nullcontext() if teacher is not None else adapters_disabled(_unwrap(model))
    with torch.no_grad(), base:
        prior = (model if teacher is None else teacher)(
            hidden_states=xt,
            timestep=sigmas * 1000.0,
            encoder_hidden_states=batch["class_text"],
            return_dict=False,
        )[0]
    kept = (x0, batch["class_text"], sigmas, noise, prior)
    return _own_plus_kept(model, own, kept, cfg.prior_preservation)


def _own_plus_kept(model, own: tuple, kept: tuple, weight: float) -> torch.Tensor:
    """mean loss on ``own`` + weight x mean loss on ``kept``, each (x0, text, sigmas, noise,
    target velocity). One forward over both halves ((2B, ...)) when their shapes agree: the
    same objective, as samples never interact, at about half the per-call overhead; two when
    they differ (a batch of clips beside one-frame class samples)."""
    if own[0].shape[1:] != kept[0].shape[1:]:
        a, b = (flow_matching_loss(model, *p[:4], target_velocity=p[4]).mean() for p in (own, kept))
        return a + weight * b
    n = len(own[0])
    x0, text, sigmas, noise, target = (torch.cat(t) for t in zip(own, kept, strict=True))
    per_sample = flow_matching_loss(model, x0, text, sigmas, noise, target_velocity=target)
    return per_sample[:n].mean() + weight * per_sample[n:].mean()


def _unwrap(model):
    return getattr(model, "module", model)


# -------------------------------------------------------------------------- the trainer


def offload_encoders(pipe) -> None:
    """With inputs cached, the text encoder and VAE leave the accelerator for the training loop
    (UMT5-XXL alone is ~11 GB in bf16); validation brings them back for its previews."""
    if pipe.device.type != "cpu":
        pipe.text_encoder.to("cpu")
        pipe.vae.to("cpu")


@contextlib.contextmanager
def encoders_on(pipe, device) -> Iterator[None]:
    if torch.device(device).type == "cpu":
        yield
        return
    pipe.text_encoder.to(device)
    pipe.vae.to(device)
    try:
        yield
    finally:
        offload_encoders(pipe)


class TrainingInterrupted(Exception):
    """Ctrl+C: the run stopped after a complete step and saved a checkpoint."""


@contextlib.contextmanager
def stop_on_sigint(flag: dict) -> Iterator[None]:
    """First Ctrl+C asks the loop to stop after the current step; a second one aborts."""

    def handler(signum, frame):
        if flag.get("stop"):
            raise KeyboardInterrupt
        flag["stop"] = True
        print("\nstopping after this step (Ctrl+C again to abort without saving)", file=sys.stderr)

    try:
        old = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. inside a web app worker)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def launched_on_cpus() -> bool:
    """Whether this process is one of several (torchrun, ``accelerate launch``) on a machine
    without a GPU. Accelerate joins such processes into one run (gloo) only when told to use the
    CPU; otherwise each trains alone on all the data, and all of them write the same files."""
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return several and not torch.cuda.is_available()


class Trainer:
    """Sets up, trains, validates, checkpoints and saves one LoRA."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, log=print):
        from accelerate import Accelerator

        cfg.validate()
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.out)
        self.lora_path = self.out / f"{cfg.name}.safetensors"
        if self.lora_path.exists() and not (cfg.overwrite or resume):
            raise FileExistsError(f"{self.lora_path} exists")
        trackers = None if cfg.log_with in ("", "none") else cfg.log_with
        self.acc = Accelerator(
            cpu=launched_on_cpus(),
            mixed_precision=cfg.mixed_precision,
            log_with=trackers,
            project_dir=str(self.out / "logs"),
        )
        self.resume = resume
        self.report = scan_folder(
            Path(cfg.data),
            cfg.trigger,
            height=cfg.height,
            width=cfg.width,
            min_usable=cfg.min_photos,
        )

    def setup(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.base_dir = resolve_base(cfg.base)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
            cfg.mixed_precision, torch.float32
        )
        self.pipe = load_pipeline(self.base_dir, device=str(self.acc.device), dtype=dtype)
        self.cache = build_cache(self.pipe, self.report, cfg)
        offload_encoders(self.pipe)
        model, self.sigma_range = expert_and_range(self.pipe, cfg.expert)
        if self.acc.device.type == "cpu":
            torch.set_num_threads(fast.cpu_threads(cfg.threads, model))
        if cfg.init_from:
            model.requires_grad_(False)
            load_adapter(model, Path(cfg.init_from), "default")
            for n, p in model.named_parameters():
                p.requires_grad_("lora_" in n)
        else:
            add_lora(model, cfg.lora_spec(), "default")
            if cfg.orthogonal_slot >= 0:
                from .compose import set_orthogonal_down

                set_orthogonal_down(model, cfg.orthogonal_slot, cfg.rank, cfg.orthogonal_seed)
        for p in lora_parameters(model):  # the frozen base may be bf16; the LoRA trains in fp32
            p.data = p.data.float()
        if cfg.grad_checkpointing:
            model.enable_gradient_checkpointing()
        trainable, frozen = parameter_counts(model)
        self.log(
            f"LoRA rank {cfg.rank} on {cfg.lora_spec().target_list()}: {trainable:,} trainable, {frozen:,} frozen parameters"
        )
        lora = lora_parameters(model)
        self.flat, params = None, lora
        if cfg.fast and self.acc.num_processes == 1:  # DDP keeps its own gradient buckets
            model.to(self.acc.device)  # before the views: a later move would replace the tensors
            self.flat = fast.FlatParameters(lora)
            params = [self.flat.param]
        adamw = fast.fused_adamw if cfg.fast else torch.optim.AdamW
        self.opt = adamw(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.model, self.opt = self.acc.prepare(model, self.opt)
        self.params = params  # what the optimiser steps and clipping reads
        self.lora = lora  # the adapter's own tensors (views of the flat one, if any)
        if cfg.fast and cfg.mixed_precision == "no":
            self._enable_fast(_unwrap(self.model))
        self.ema = [p.detach().clone() for p in lora] if cfg.ema > 0 else None
        self.best = {"score": -math.inf, "step": 0, "tensors": None, "metrics": None}
        self.start = self._maybe_resume()
        self.validator = (
            Validator(self) if self.acc.is_main_process and cfg.validate_every >= 0 else None
        )
        if (
            self.acc.is_main_process
            and self.acc.trackers == []
            and cfg.log_with not in ("", "none")
        ):
            self.acc.init_trackers(
                "cameo",
                config={
                    k: v for k, v in asdict(cfg).items() if isinstance(v, (int, float, str, bool))
                },
            )

    def _enable_fast(self, model) -> None:
        """Route the transformer through ``cameo.fast`` and cache the frozen text side of every
        prompt training uses (captions, the empty prompt, class prompts if needed)."""
        c = self.cache
        prompts = [c["text"], c["class_text"]] if self.cfg.prior_preservation > 0 else [c["text"]]
        if "stranger_text" in c:
            prompts.append(c["stranger_text"].flatten(0, 1))  # (n_captions * K, T, D)
        fast.enable(model).cache_text(torch.cat([*prompts, c["empty"][None]]).to(self.acc.device))

    def _maybe_resume(self) -> int:
        root = self.out / "checkpoints"
        if not self.resume:
            return 0
        last = ckpt.latest(root)
        if last is None:
            raise FileNotFoundError(f"--resume: no complete checkpoint in {root}")
        tensors, state, optim = ckpt.load(last)
        model = _unwrap(self.model)
        with torch.no_grad():  # in place on the parameter: its version moves, caches follow
            for n, p in model.named_parameters():
                if n in tensors:
                    p.copy_(tensors[n])
        if optim is not None:
            self.opt.load_state_dict(self.flat.flat_state(optim) if self.flat else optim)
        if self.ema is not None and "ema" in state:
            for e, k in zip(self.ema, state["ema"], strict=True):
                e.copy_(tensors[k])
        self.best.update({k: state["best"][k] for k in ("score", "step", "metrics")})
        if state.get("best_tensors"):
            self.best["tensors"] = {
                k.removeprefix("best::"): v for k, v in tensors.items() if k.startswith("best::")
            }
        ckpt.set_rng_state(state["rng"])
        self.log(f"resumed from {last} (step {state['step']})")
        return int(state["step"])

    def _checkpoint(self, step: int) -> None:
        if not self.acc.is_main_process:
            return
        model = _unwrap(self.model)
        tensors = {n: p for n, p in model.named_parameters() if p.requires_grad}
        state = {
            "rng": ckpt.rng_state(),
            "best": {k: self.best[k] for k in ("score", "step", "metrics")},
        }
        if self.ema is not None:
            names = [f"ema::{i}" for i in range(len(self.ema))]
            tensors.update(dict(zip(names, self.ema, strict=True)))
            state["ema"] = names
        if self.best["tensors"] is not None:
            tensors.update({f"best::{k}": v for k, v in self.best["tensors"].items()})
            state["best_tensors"] = True
        optim = self.opt.state_dict()
        if self.flat is not None:  # checkpoints keep the per-tensor layout either way
            optim = self.flat.per_tensor_state(optim)
        ckpt.save(self.out / "checkpoints", step, tensors, state, optim)

    def train(self) -> Path:
        threads = torch.get_num_threads()  # setup may change it for the loop; restore it after
        try:
            return self._train()
        finally:
            torch.set_num_threads(threads)

    def _train(self) -> Path:
        cfg = self.cfg
        self.setup()
        self._write_config()
        t0, self.patience = time.time(), 0
        bar = tqdm(
            range(self.start, cfg.steps),
            initial=self.start,
            total=cfg.steps,
            desc=f"train {cfg.name}",
            disable=not self.acc.is_main_process,
            dynamic_ncols=True,
        )
        flag = self.stop_flag = {"stop": False}
        with stop_on_sigint(flag):
            for step in bar:
                if flag["stop"]:
                    self._checkpoint(step)
                    raise TrainingInterrupted(
                        f"stopped at step {step}; checkpoint saved, continue with --resume"
                    )
                if self._train_one(step, bar):
                    break
        self.acc.wait_for_everyone()
        path = self._save_outputs(time.time() - t0)
        self.acc.end_training()
        return path

    def _train_one(self, step: int, bar) -> bool:
        """One step plus its validation and checkpoint; True means stop early."""
        cfg = self.cfg
        loss = self._step(step)
        if self.acc.is_main_process:
            with open(self.out / "losses.jsonl", "a") as f:
                f.write(json.dumps({"step": step, "loss": loss}) + "\n")
        bar.set_postfix(loss=f"{loss:.4f}")
        self.acc.log({"loss": loss, "lr": self.opt.param_groups[0]["lr"]}, step=step)
        done = step + 1
        if self._validation_due(done):
            improved = self._validate(done)
            self.patience = 0 if improved else self.patience + 1
            if cfg.early_stop and self.patience >= cfg.early_stop:
                self.log(f"identity stopped improving; early stop at step {done}")
                self._checkpoint(done)
                return True
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
            self._checkpoint(done)
        return False

    def _step(self, step: int) -> float:
        cfg = self.cfg
        for g in self.opt.param_groups:
            g["lr"] = lr_at(step, cfg.steps, cfg.lr, cfg.warmup, cfg.schedule)
        batch = make_batch(
            self.cache, cfg, step, self.acc.process_index, self.acc.num_processes, self.sigma_range
        )
        batch = {k: v.to(self.acc.device) for k, v in batch.items()}
        with self.acc.autocast():
            loss = training_loss(self.model, batch, cfg)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at step {step}; the last good checkpoint is kept. "
                "Lower --lr, or use --mixed-precision no."
            )
        self.acc.backward(loss)
        if self.cfg.fast:
            norm = fast.clip_grad_norm_(self.acc, self.params, 1.0)
        else:
            norm = self.acc.clip_grad_norm_(self.params, 1.0)
        if norm is not None and not torch.isfinite(torch.as_tensor(norm)):
            raise FloatingPointError(
                f"gradients became non-finite at step {step}; the last good checkpoint is kept. "
                "Lower --lr, or use --mixed-precision no."
            )
        self.opt.step()
        if self.flat is not None:
            self.flat.zero_grad()
        else:
            self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            with torch.no_grad():
                for e, p in zip(self.ema, self.lora, strict=True):
                    e.lerp_(p.detach(), 1 - cfg.ema)
        return (
            self.acc.reduce(loss.detach(), "mean").item()
            if self.acc.num_processes > 1
            else loss.item()
        )

    def _validation_due(self, done: int) -> bool:
        every = self.cfg.validate_every
        return self.validator is not None and (
            done == self.cfg.steps or (every > 0 and done % every == 0)
        )

    def _validate(self, done: int) -> bool:
        metrics = self.validator.run(done)
        if metrics is None:
            return False
        self.acc.log({f"val/{k}": v for k, v in metrics.items() if isinstance(v, float)}, step=done)
        score = metrics.get("identity_normalised", -math.inf)
        self.log(
            f"step {done}: identity {score:.3f}, prompt fidelity {metrics.get('prompt_fidelity', float('nan')):.2f}"
        )
        if score > self.best["score"] + 1e-3:
            self.best.update(
                score=score,
                step=done,
                metrics=metrics,
                tensors=adapter_state_dict(_unwrap(self.model)),
            )
            return True
        return False

    def _save_outputs(self, seconds: float) -> Path:
        if not self.acc.is_main_process:
            return self.lora_path
        cfg, model = self.cfg, _unwrap(self.model)
        if self.ema is not None:
            for e, p in zip(self.ema, lora_parameters(model), strict=True):
                with torch.no_grad():  # not .data: the version must move for caches
                    p.copy_(e)
        last = adapter_state_dict(model)
        meta = {
            "name": cfg.name,
            "trigger": cfg.trigger,
            "base": str(cfg.base),
            "base_hash": base_hash(self.base_dir),
            "config": asdict(cfg),
            "train_seconds": round(seconds, 1),
            "processes": self.acc.num_processes,  # joined into one run (torchrun, accelerate)
            "expert": cfg.expert
            if getattr(self.pipe, "transformer_2", None) is not None
            else "single",
            **(
                {
                    "orthogonal_slot": str(cfg.orthogonal_slot),
                    "orthogonal_seed": str(cfg.orthogonal_seed),
                }
                if cfg.orthogonal_slot >= 0
                else {}
            ),
        }
        chosen, chosen_meta = (
            last,
            {**meta, "step": cfg.steps, "metrics": self.best["metrics"] or {}},
        )
        if self.best["tensors"] is not None and self.ema is None:
            chosen = self.best["tensors"]
            chosen_meta = {**meta, "step": self.best["step"], "metrics": self.best["metrics"]}
            save_lora_file(
                self.out / f"{cfg.name}-last.safetensors",
                last,
                cfg.lora_spec(),
                {**meta, "step": cfg.steps},
                overwrite=True,
            )
        save_lora_file(self.lora_path, chosen, cfg.lora_spec(), chosen_meta, overwrite=True)
        (self.out / "metrics.json").write_text(
            json.dumps(
                {
                    "best_step": chosen_meta["step"],
                    "metrics": chosen_meta["metrics"],
                    "train_seconds": meta["train_seconds"],
                },
                indent=1,
            )
        )
        self.log(f"LoRA written to {self.lora_path} (step {chosen_meta['step']}, {seconds:.0f} s)")
        return self.lora_path

    def _write_config(self) -> None:
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(asdict(self.cfg), indent=2) + "\n")
            (self.out / "dataset_report.txt").write_text(self.report.format() + "\n")


class Validator:
    """Fixed-seed previews scored by cameo's eyes against the training photos."""

    def __init__(self, trainer: Trainer):
        from .metrics.evaluate import Eyes, default_prompts

        self.trainer = trainer
        try:
            self.eyes = Eyes()
        except FileNotFoundError:
            self.eyes = None
            return
        photos = [i.frames[0] for i in trainer.report.items if i.frames.shape[0] == 1]
        import numpy as np

        from .metrics.evaluate import to_model_size
        from .metrics.scores import self_similarity

        self.refs = self.eyes.embed(to_model_size(np.stack(photos)))
        self.self_sim = self_similarity(self.refs)
        self.prompts = default_prompts(trainer.cfg.trigger)["subject"][:3]

    def run(self, step: int) -> dict | None:
        if self.eyes is None:
            return None
        from .metrics.evaluate import summarise

        t = self.trainer
        model = _unwrap(t.model)
        model.eval()
        with encoders_on(t.pipe, t.acc.device):
            recs = self._previews(step)
        model.train()
        return summarise(recs)

    def _previews(self, step: int) -> list[dict]:
        from .generate import GenerateConfig, generate_frames
        from .media import save_clip_outputs
        from .metrics.evaluate import score_clip

        t, recs = self.trainer, []
        for k, prompt in enumerate(self.prompts):
            gen = GenerateConfig(prompt=prompt, seed=k, height=t.cfg.height, width=t.cfg.width)
            frames = generate_frames(t.pipe, gen)
            recs.append(score_clip(self.eyes, frames, prompt, self.refs, self.self_sim))
            save_clip_outputs(
                frames,
                t.out / "previews" / f"step{step:05d}-{k}.mp4",
                overwrite=True,
                meta={"prompt": prompt, "step": step},
            )
        return recs


# Settings of one invocation (how fast it runs, what it logs, whether it may replace files),
# not of the adapter; a --resume takes every other one from the run's config.json unless given
# (checkpoint.settings_from_run), so the adapter keeps its rank, targets and schedule.
PER_INVOCATION = (
    "out",
    "threads",
    "checkpoint_every",
    "log_with",
    "overwrite",
    "fast",
    "grad_checkpointing",
    "mixed_precision",
)


def run_training(cfg: TrainConfig, resume: bool = False, log=None) -> Path:
    """Train one LoRA; returns the path of the written file."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    trainer = Trainer(cfg, resume=resume, log=log)
    log(trainer.report.format())
    return trainer.train()
