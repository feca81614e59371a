"""``TrainConfig``: every option of ``cameo train``, validated in one place and written beside
the LoRA as config.json."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..lora import LoraSpec
from ..models import resolve_base
from ..models.profiles import BaseProfile, detect_profile

PRIOR_SOURCES = ("photos", "generated")
LORA_FIELDS = tuple(f.name for f in fields(LoraSpec))  # given flat as flags and API options


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
    height: int | None = field(
        default=None,
        metadata={
            "help": "training height: the area of the photos' aspect-ratio buckets (multiple "
            "of 16; default: the base's own, 64 on cameo-tiny, 480 on Wan)"
        },
    )
    width: int | None = field(
        default=None,
        metadata={"help": "training width (multiple of 16; default: the base's own, 64 / 832)"},
    )
    lora: LoraSpec = field(
        default_factory=LoraSpec,
        metadata={
            "help": "the adapter: which matrices get a low-rank change, and how big",
            "flatten": True,  # its fields are flags of their own: --rank, --alpha, --targets...
        },
    )
    expert: str | None = field(
        default=None,
        metadata={
            "help": "Wan 2.2 A14B: which expert to adapt: both (the default on a two-expert base: "
            "each step trains the one its noise level belongs to, as generation routes it, "
            "and NAME_high_noise / NAME_low_noise files come out beside the one file), high "
            "(noisy steps, `transformer`) or low (`transformer_2`); one-transformer bases "
            "train their one"
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
            "trains in under 2 minutes on a 2-core CPU (docs/log.md)"
        },
    )
    batch: int | None = field(
        default=None,
        metadata={"help": "global batch size (default: the base's own, 8 on cameo-tiny, 1 on Wan)"},
    )
    lr: float | None = field(
        default=None,
        metadata={
            "help": "peak learning rate, AdamW (default: the base's own, 2e-3 on cameo-tiny, "
            "2e-4 on Wan 1.3B and 5B, 1e-4 on 14B)"
        },
    )
    schedule: str = field(default="cosine", metadata={"help": "cosine | constant (after warmup)"})
    warmup: int = field(default=25, metadata={"help": "warmup steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    seed: int = field(default=0, metadata={"help": "seed of batches, noise and initialisation"})
    caption_dropout: float = field(default=0.05, metadata={"help": "share of empty prompts"})
    sigma_shift: float | None = field(
        default=None,
        metadata={
            "help": "shift of the logit-normal training sigmas (SD3, eq. 23): above 1 spends more "
            "steps at high noise, where layout and face shape form; below 1 at low noise, where "
            "fine details do; default: the base scheduler's own shift, shared with sampling"
        },
    )
    min_snr_gamma: float = field(
        default=0.0,
        metadata={
            "help": "weigh each sample's loss by Min-SNR-gamma (Hang et al. 2023) of its noise "
            "level, as a velocity loss: the middle of the noise range weighs 1, both ends less; "
            "5 is the paper's gamma; 0 = off, every noise level weighs the same"
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
            "0.5 cut leakage from +0.13 to +0.02 on cameo-tiny (docs/log.md)"
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
            "1.0 cut leakage from +0.055 to +0.001 on cameo-tiny (docs/log.md); with "
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
    image_to_video: bool = field(
        default=False,
        metadata={
            "help": "train for animating a given first frame (each clip's first frame, each "
            "photo itself). Image-to-video bases (Wan 2.1/2.2 I2V, cameo-tiny-i2v) always do; "
            "this asks it of Wan 2.2 TI2V-5B, which otherwise trains text-to-video"
        },
    )
    ema: float = field(
        default=0.0, metadata={"help": "EMA decay of the LoRA weights saved at the end (0 = off)"}
    )
    grad_checkpointing: bool | None = field(
        default=None,
        metadata={
            "help": "recompute activations in backward to save memory (default: on for Wan, "
            "off for cameo-tiny)"
        },
    )
    mixed_precision: str | None = field(
        default=None,
        metadata={
            "help": "no | bf16 | fp16 (default: the base's own on a GPU, bf16 for Wan; no on a CPU)"
        },
    )
    fast: bool = field(
        default=True,
        metadata={
            "help": "fast path (cameo.models.fast): same maths, fewer operations; --no-fast runs the plain diffusers + PEFT forward"
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
    identity: str = field(
        default="auto",
        metadata={
            "help": "who judges identity in validation and picks the best checkpoint: world = "
            "cameo's eyes (cameo-tiny's world), face = the face descriptor on real faces (the "
            "faces extra), auto = world on cameo-tiny, face on any other base"
        },
    )
    fp8_base: bool = field(
        default=False,
        metadata={
            "help": "store the frozen transformer's weights in float8 (e4m3), computed in bf16 "
            "(diffusers' layerwise casting): half the weights' memory; the LoRA stays fp32"
        },
    )
    offload: str = field(
        default="none",
        metadata={
            "help": "none | block | leaf: keep the frozen transformer on the CPU and bring one "
            "block (or layer) to the GPU at a time (diffusers' group offloading); the text "
            "encoder streams in likewise while the cache is built"
        },
    )
    disk_cache: bool = field(
        default=True,
        metadata={
            "help": "keep the latents and text embeddings in OUT/cache, so a second run or a "
            "--resume on the same photos encodes nothing (--no-disk-cache: memory only)"
        },
    )
    sample_prompts: str = field(
        default="",
        metadata={
            "help": "file of validation prompts, one per line ([trigger] is replaced by the "
            "trigger); default: three of the base's own (world scenes on cameo-tiny, real-world "
            "scenes otherwise)"
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.lora, dict):  # read back from config.json
            self.lora = LoraSpec(**self.lora)

    def resolve(self, profile: BaseProfile, on_gpu: bool) -> dict[str, Any]:
        """Fill the settings left to the base (None) from its ``profile``; returns what was
        filled. Mixed precision is the profile's on a GPU and fp32 ("no") on a CPU."""
        wanted = {
            "height": profile.height,
            "width": profile.width,
            "batch": profile.batch,
            "lr": profile.lr,
            "sigma_shift": profile.flow_shift,
            "grad_checkpointing": profile.grad_checkpointing,
            "mixed_precision": profile.mixed_precision if on_gpu else "no",
        }
        if profile.experts == 2:
            wanted["expert"] = "both"
        filled = {k: v for k, v in wanted.items() if getattr(self, k) is None}
        for k, v in filled.items():
            setattr(self, k, v)
        return filled

    @classmethod
    def from_options(cls, **options: Any) -> TrainConfig:
        """A config from flat options, as the command line and ``cameo.train`` give them: the
        adapter's own (``rank``, ``alpha``, ``targets``, ``ffn``, ``rslora``) go into ``lora``."""
        spec = {k: options.pop(k) for k in LORA_FIELDS if k in options}
        cfg = cls(**options)
        if spec:
            cfg.lora = replace(cfg.lora, **spec)
        return cfg

    def validate(self) -> None:
        """Refuse settings that cannot train, with the flag to change. Settings left to the
        base (None) are checked once ``resolve`` has filled them."""
        if not self.data:
            raise ValueError("--data is required: a folder of photos with captions")
        if not self.trigger.strip() or len(self.trigger.split()) != 1:
            raise ValueError(
                "--trigger must be one word that names the person, e.g. --trigger mike"
            )
        for name in ("steps", "batch", "checkpoint_every"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.lr is not None and not 0 < self.lr < 1:
            raise ValueError(f"--lr must be in (0, 1), not {self.lr}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError("--schedule must be cosine or constant")
        if self.expert not in (None, "both", "high", "low"):
            raise ValueError(f"--expert must be both, high or low, not {self.expert!r}")
        if self.mixed_precision not in (None, "no", "bf16", "fp16"):
            raise ValueError("--mixed-precision must be no, bf16 or fp16")
        if self.min_snr_gamma < 0:
            raise ValueError("--min-snr-gamma must be >= 0 (0 = off)")
        if not 0 <= self.ema < 1 or not 0 <= self.caption_dropout < 1:
            raise ValueError("--ema and --caption-dropout must be in [0, 1)")
        if self.sigma_shift is not None and not 0 < self.sigma_shift <= 20:
            raise ValueError(f"--sigma-shift must be in (0, 20], not {self.sigma_shift}")
        if not 0 <= self.trigger_only < 1:
            raise ValueError("--trigger-only must be in [0, 1)")
        if self.prior_source not in PRIOR_SOURCES:
            raise ValueError(f"--prior-source must be {' or '.join(PRIOR_SOURCES)}")
        if self.still_clips and (self.still_clips < 5 or (self.still_clips - 1) % 4):
            raise ValueError("--still-clips must be 0 or 4k+1 frames (5, 9, 13, 17, ...)")
        if not 0 <= self.prior_strangers <= 1:
            raise ValueError("--prior-strangers must be in [0, 1]")
        for side in (self.height, self.width):
            if side is not None and (side % 16 or side < 16):
                raise ValueError("--height and --width must be multiples of 16")
        if self.offload not in ("none", "block", "leaf"):
            raise ValueError(f"--offload must be none, block or leaf, not {self.offload!r}")
        if self.identity not in ("world", "face", "auto"):
            raise ValueError(f"--identity must be world, face or auto, not {self.identity!r}")
        if self.sample_prompts and not Path(self.sample_prompts).is_file():
            raise ValueError(f"--sample-prompts: {self.sample_prompts} does not exist")
        self.lora.validate()

    @classmethod
    def from_toml(cls, path: Path, **overrides) -> TrainConfig:
        """Read a TOML config (keys as the flags, with _ or -), then apply overrides."""
        raw = tomllib.loads(Path(path).read_text())
        raw = {k.replace("-", "_"): v for k, v in raw.get("train", raw).items()}
        raw = {**raw.pop("lora", {}), **raw}  # a [train.lora] table or flat rank = ...
        known = {f.name for f in fields(cls)} | set(LORA_FIELDS)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown settings {', '.join(unknown)}")
        return cls.from_options(**{**raw, **overrides})


def resolve_from_base(cfg: TrainConfig, on_gpu: bool | None = None) -> dict[str, Any]:
    """``cfg.resolve`` with the profile of ``cfg.base`` (on a GPU when CUDA is present)."""
    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    return cfg.resolve(detect_profile(resolve_base(cfg.base)), on_gpu)


# Settings of one invocation (how fast it runs, what it logs, whether it may replace files),
# not of the adapter; a --resume takes every other one from the run's config.json unless given
# (checkpoint.settings_from_run), so the adapter keeps its rank, targets and schedule.
PER_INVOCATION = (
    "out",
    "fp8_base",
    "offload",
    "disk_cache",
    "threads",
    "checkpoint_every",
    "log_with",
    "overwrite",
    "fast",
    "grad_checkpointing",
    "mixed_precision",
)
