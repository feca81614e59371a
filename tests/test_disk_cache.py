"""Latents and text embeddings on disk: a second run encodes nothing and trains the same, a
changed photo re-encodes only itself, a different VAE reads nothing."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from cameo.data.world_folders import write_person_folder
from cameo.training import Trainer
from cameo.training.disk_cache import DiskCache
from conftest import train_config


def _train(photos, base, out, logs):
    cfg = train_config(photos, base, out, steps=2, overwrite=True)
    trainer = Trainer(cfg, log=logs.append)
    return trainer, load_file(str(trainer.train()))


def test_a_second_run_encodes_nothing_and_trains_the_same(tmp_path, tiny_pipeline_dir):
    photos = write_person_folder(5, tmp_path / "photos", 5)
    out, logs = tmp_path / "run", []
    first, a = _train(photos, tiny_pipeline_dir, out, logs)
    assert first_count(first) == (5, 0)  # five photos encoded, none reused
    assert first.cache and list((out / "cache" / "latents").iterdir())
    second, b = _train(photos, tiny_pipeline_dir, out, logs)
    assert second_count(second) == (0, 5)
    assert second.report.items and all(torch.equal(a[k], b[k]) for k in a)  # the same LoRA
    assert any("reused 5" in line for line in logs)

    # one photo changes: only it is encoded again
    img = Image.open(photos / "photo_002.png")
    Image.fromarray(255 - np.asarray(img)).save(photos / "photo_002.png")
    third, _ = _train(photos, tiny_pipeline_dir, out, logs)
    assert (third.store.encoded["latents"], third.store.reused["latents"]) == (1, 4)


def first_count(trainer) -> tuple[int, int]:
    """(latents encoded, latents read from the disk cache) by the trainer's setup."""
    return trainer.store.encoded["latents"], trainer.store.reused["latents"]


second_count = first_count


def test_the_key_names_the_vae_so_another_reads_nothing(tmp_path, tiny_pipeline_dir):
    frames = np.zeros((1, 32, 32, 3), np.uint8)
    calls = []

    def encode(f):
        calls.append(1)
        return torch.ones(1, 4, 1, 4, 4)

    one = DiskCache(tmp_path, tiny_pipeline_dir, torch.float32, 64)
    one.latent(frames, encode)
    one.latent(frames, encode)
    assert len(calls) == 1  # the second call read the file
    other = DiskCache(tmp_path, tiny_pipeline_dir, torch.bfloat16, 64)  # the VAE in bf16
    other.latent(frames, encode)
    assert len(calls) == 2
    texts = DiskCache(tmp_path, tiny_pipeline_dir, torch.float32, 64)
    got = texts.texts(["a", "b"], lambda t: torch.arange(len(t) * 6.0).view(len(t), 2, 3))
    again = texts.texts(["a", "b"], lambda t: (_ for _ in ()).throw(AssertionError("encoded")))
    assert torch.equal(got, again) and texts.reused["text"] == 2
    for f in (tmp_path / "latents").iterdir():  # a torn file is encoded again, not trusted
        f.write_bytes(b"\x00" * 10)
    DiskCache(tmp_path, tiny_pipeline_dir, torch.float32, 64).latent(frames, encode)
    assert len(calls) == 3
