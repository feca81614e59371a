"""What ``cameo pretrain`` is told: ``PretrainConfig`` with its validation, the architecture
TOML (``--architecture``) and how a resume settles it, and the settings that belong to one
invocation rather than to the run (``PER_INVOCATION``)."""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..models import TransformerConfig, VAEConfig, resolve_base
from ..training import checkpoint as ckpt


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
    decoder_adversarial: float = field(
        default=0.0,
        metadata={
            "help": "decoder stage: weight of a patch discriminator's hinge loss beside the "
            "pixel losses (times LDM's adaptive weight; 0 = pixel losses only); trains the "
            "run's decoder on in its own folder (<stage>-adversarial) and rewrites the run's "
            "export; per invocation, like --decoder-denoiser"
        },
    )
    decoder_adversarial_start: int = field(
        default=100,
        metadata={
            "help": "with --decoder-adversarial: steps of pixel losses alone (the "
            "discriminator learns from the first step) before the decoder is also judged"
        },
    )
    decoder_lr: float = field(default=3e-4, metadata={"help": "decoder stage learning rate"})
    decoder_batch: int = field(default=4, metadata={"help": "decoder stage: clips a step"})
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
    schedule: str = field(
        default="cosine",
        metadata={
            "help": "learning rate after the warm-up, every stage: cosine (down to a tenth of "
            "the peak at the last step) | constant (usual with --ema, whose average then "
            "smooths the last steps' noise)"
        },
    )
    ema: float = field(
        default=0.0,
        metadata={
            "help": "decay of an exponential moving average of the transformer's weights, "
            "exported instead of the last weights (0 = off; 0.999 is usual); checkpoints keep "
            "both, and a run resumed with an EMA it did not have starts the average there"
        },
    )
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
    task: str = field(
        default="t2v",
        metadata={
            "help": "t2v (text to video: cameo-tiny) | i2v (image to video, exported as a "
            "WanImageToVideoPipeline: the transformer also reads the clip's first frame, "
            "encoded as the pipeline encodes it, a photo's being the photo itself)"
        },
    )
    vae_from: str = field(
        default="",
        metadata={
            "help": "a pipeline folder ('cameo-tiny' = the shipped model) whose finished VAE, "
            "latent statistics included, the run takes instead of training one (no VAE or "
            "decoder stage); empty = the run's own VAE stage"
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
        if self.decoder_adversarial < 0 or self.decoder_adversarial_start < 0:
            raise ValueError("--decoder-adversarial and --decoder-adversarial-start must be >= 0")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"--schedule must be cosine or constant, not {self.schedule!r}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"--ema must be in [0, 1) (0 = off), not {self.ema}")
        if self.decoder_lr <= 0 or self.decoder_batch < 1:
            raise ValueError("--decoder-lr must be positive and --decoder-batch at least 1")
        if not 0 < self.decoder_denoise_sigma <= 1 or not 0 <= self.decoder_clean_share <= 1:
            raise ValueError(
                "--decoder-denoise-sigma must be in (0, 1] and --decoder-clean-share in [0, 1]"
            )
        if self.decoder_denoiser:
            try:
                resolve_base(self.decoder_denoiser)
            except FileNotFoundError as e:
                raise ValueError(f"--decoder-denoiser: {e}") from e
        if self.task not in ("t2v", "i2v"):
            raise ValueError(f"--task must be t2v or i2v, not {self.task!r}")
        if self.transformer.image_to_video != (self.task == "i2v"):
            raise ValueError(
                f"--task {self.task} needs transformer.image_to_video = {self.task == 'i2v'}"
            )
        if self.vae_from:
            self._check_vae_from()
        if self.famous_weight <= 0:
            raise ValueError(f"--famous-weight must be positive, not {self.famous_weight}")

    def _check_vae_from(self) -> None:
        if self.stage not in ("transformer", "all"):
            raise ValueError("--vae-from replaces the VAE stage: use --stage transformer or all")
        try:
            config = resolve_base(self.vae_from) / "vae" / "config.json"
        except FileNotFoundError as e:
            raise ValueError(f"--vae-from: {e}") from e
        theirs = json.loads(config.read_text())
        mismatched = [k for k, v in asdict(self.vae).items() if theirs.get(k, v) != v]
        if mismatched:
            raise ValueError(
                f"--vae-from {self.vae_from}: its VAE differs from the run's in {mismatched}; "
                "give an --architecture whose [vae] table is its"
            )


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
    "decoder_adversarial",
    "decoder_adversarial_start",
    "decoder_lr",
    "decoder_batch",
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
    # the task decides whether the transformer reads a first frame (a resumed run's task is
    # its own, so this agrees with the shapes of its checkpoints)
    cfg.transformer.image_to_video = cfg.task == "i2v"
