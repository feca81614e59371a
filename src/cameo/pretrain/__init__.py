"""``cameo pretrain``: the built-in model cameo-tiny trained from the procedural world, one
module per stage.

- ``config``: ``PretrainConfig``, the architecture TOML, the settings of one invocation;
- ``data``: every stage's batches, drawn from the world by index, and the latent cache;
- ``stage``: what the stages share, the one optimisation loop with their log and time budget;
- ``vae``, ``decoder``, ``transformer``: the stages (``transformer_init``: ``--init-transformer``);
- ``run``: ``run_pretrain``, the stages in order; ``export``: the model and its card.
"""

from .config import (
    PER_INVOCATION,
    PretrainConfig,
    read_architecture,
    resolve_architecture,
)
from .data import _transformer_batch as _transformer_batch
from .data import _vae_batch as _vae_batch
from .data import build_cache, famous_sample_weights, prefetched
from .decoder import (
    PretrainSetupError,
    check_denoiser,
    decoder_stage_name,
    finetune_decoder,
    load_redraw,
)
from .decoder import _load_finished_vae as _load_finished_vae
from .export import export_model, model_card, shipped_dir, stage_minutes
from .run import run_pretrain
from .stage import _psnr as _psnr
from .stage import pick_device, run_stage
from .transformer import train_transformer
from .transformer_init import check_warm_start, warm_start
from .vae import latent_stats, train_vae

__all__ = [
    "PER_INVOCATION",
    "PretrainConfig",
    "PretrainSetupError",
    "build_cache",
    "check_denoiser",
    "check_warm_start",
    "decoder_stage_name",
    "export_model",
    "famous_sample_weights",
    "finetune_decoder",
    "latent_stats",
    "load_redraw",
    "model_card",
    "pick_device",
    "prefetched",
    "read_architecture",
    "resolve_architecture",
    "run_pretrain",
    "run_stage",
    "shipped_dir",
    "stage_minutes",
    "train_transformer",
    "train_vae",
    "warm_start",
]
