"""Shared fixtures: a tiny, randomly initialised cameo-style Wan pipeline directory."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or min(2, os.cpu_count() or 1))

# Three spatial halvings (8x): a 32x32 test frame is 4x4 latents, so the test models stay fast
# (cameo-tiny's own VAE halves twice).
TINY_VAE = dict(base_dim=8, z_dim=4, dim_mult=[1, 2, 4, 4], temperal_downsample=[False, True, True])
TINY_TRANSFORMER = dict(
    num_attention_heads=2,
    attention_head_dim=8,
    num_layers=2,
    ffn_dim=32,
    in_channels=4,
    freq_dim=16,
)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` need CUDA: skipped where there is none (pyproject.toml markers)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def tiny_parts(seed: int = 0):
    from cameo.models import TransformerConfig, VAEConfig

    torch.manual_seed(seed)
    vae = VAEConfig(**TINY_VAE).build().eval()
    transformer = TransformerConfig(**TINY_TRANSFORMER).build().eval()
    return vae, transformer


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    from cameo.models import save_pipeline_dir

    vae, transformer = tiny_parts()
    return save_pipeline_dir(tmp_path_factory.mktemp("tiny") / "pipe", vae, transformer)


def train_argv(
    photos, base, out, *extra: str, steps: int = 2, batch: int = 2, rank: int = 4
) -> list[str]:
    """`cameo train` arguments for a tiny, quiet run on ``photos`` (no validation, no logger)."""
    return [
        "train", "--data", str(photos), "--trigger", "mike", "--name", "mike", "--out", str(out),
        "--base", str(base), "--steps", str(steps), "--batch", str(batch), "--rank", str(rank), "--alpha", str(rank),
        "--validate-every", "0", "--log-with", "none", *extra,
    ]  # fmt: skip


def train_config(photos, base, out, **overrides):
    """The same tiny run as a TrainConfig, for in-process tests."""
    from cameo.training import TrainConfig
    from cameo.training.config import resolve_from_base

    cfg = dict(data=str(photos), trigger="mike", name="mike", out=str(out), base=str(base), steps=4, batch=2,
               rank=4, alpha=4, validate_every=0, log_with="none")  # fmt: skip
    config = TrainConfig.from_options(**{**cfg, **overrides})
    resolve_from_base(config, on_gpu=False)  # what the trainer does first, for direct use
    return config
