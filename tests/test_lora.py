"""LoRA invariants on a tiny real Wan pipeline. Each test first makes the adapter change the
output (B is zero at init, so an untouched adapter proves nothing), then asserts."""

import numpy as np
import pytest
import torch
from diffusers import WanPipeline

from cameo.generation import GenerateConfig, apply_loras, generate_frames
from cameo.lora import LoraSpec, adapter_state_dict, add_lora, lora_parameters, parameter_counts
from cameo.lora_files import read_lora_file, save_lora_file
from cameo.models import load_pipeline

CFG = dict(
    prompt="mike, a man with short red hair, speaking, in front of a blue wall",
    frames=5,
    height=32,
    width=32,
    steps=2,
    guidance=3.0,
    seed=0,
)


def _frames(pipe, **kw):
    return generate_frames(pipe, GenerateConfig(**{**CFG, **kw})).astype(np.int16)


def _perturb_lora(model, scale=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.add_(torch.randn(p.shape, generator=g) * scale)


@pytest.fixture()
def pipe(tiny_pipeline_dir):
    return load_pipeline(tiny_pipeline_dir)


def _lora_file(pipe, tmp_path, seed=0, rank=4):
    add_lora(pipe.transformer, LoraSpec(rank=rank, alpha=rank), "default")
    _perturb_lora(pipe.transformer, seed=seed)
    path = save_lora_file(
        tmp_path / f"mike{seed}.safetensors",
        adapter_state_dict(pipe.transformer),
        LoraSpec(rank=rank, alpha=rank),
        {"trigger": "mike"},
    )
    return path


def test_zero_init_adapter_equals_base_and_perturbed_differs(pipe):
    base = _frames(pipe)
    add_lora(pipe.transformer, LoraSpec(rank=4), "default")
    np.testing.assert_array_equal(_frames(pipe), base)  # B = 0 at init
    _perturb_lora(pipe.transformer)
    changed = _frames(pipe)
    assert np.abs(changed - base).mean() > 1.0
    pipe.transformer.disable_adapters()
    np.testing.assert_array_equal(_frames(pipe), base)


def test_only_lora_parameters_are_trainable_and_change(pipe):
    from cameo.diffusion import flow_matching_loss

    model = pipe.transformer
    add_lora(model, LoraSpec(rank=4), "default")
    trainable, frozen = parameter_counts(model)
    assert 0 < trainable < frozen
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(lora_parameters(model), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 4, 2, 4, 4, generator=g)
    for _ in range(2):  # step 1 moves only B (A's grad is zero while B = 0); step 2 moves A too
        loss = flow_matching_loss(
            model,
            x0,
            torch.randn(2, 8, 384, generator=g),
            torch.rand(2, generator=g),
            torch.randn(x0.shape, generator=g),
        ).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    for n, p in model.named_parameters():
        moved = not torch.equal(before[n], p.detach())
        assert moved == ("lora_" in n), n


def test_file_round_trip_scale_zero_and_stock_loader(pipe, tiny_pipeline_dir, tmp_path):
    path = _lora_file(pipe, tmp_path)
    adapted = _frames(pipe)
    tensors, meta = read_lora_file(path)
    assert all(k.startswith("transformer.blocks.") and ".lora_" in k for k in tensors)
    assert meta["cameo.trigger"] == "mike" and "lora_adapter_metadata" in meta
    # A fresh pipeline, stock diffusers loading our file, same seed: the same clip.
    stock = WanPipeline.from_pretrained(tiny_pipeline_dir)
    stock.set_progress_bar_config(disable=True)
    stock.load_lora_weights(str(path), adapter_name="mike")
    np.testing.assert_array_equal(_frames(stock), adapted)
    stock.set_adapters(["mike"], [0.0])
    base = load_pipeline(tiny_pipeline_dir)
    np.testing.assert_array_equal(_frames(stock), _frames(base))


def test_fused_equals_unfused(pipe, tiny_pipeline_dir, tmp_path):
    path = _lora_file(pipe, tmp_path)
    unfused = load_pipeline(tiny_pipeline_dir)
    apply_loras(unfused, [f"{path}:0.7"])
    fused = load_pipeline(tiny_pipeline_dir)
    apply_loras(fused, [f"{path}:0.7"], fuse=True)
    assert not any("lora_" in n for n, _ in fused.transformer.named_parameters())
    gen = dict(
        hidden_states=torch.randn(1, 4, 2, 4, 4, generator=torch.Generator().manual_seed(1)),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 8, 384, generator=torch.Generator().manual_seed(2)),
        return_dict=False,
    )
    with torch.no_grad():
        a, b = unfused.transformer(**gen)[0], fused.transformer(**gen)[0]
        base = load_pipeline(tiny_pipeline_dir).transformer(**gen)[0]
    assert (a - base).abs().max() > 1e-3
    assert (a - b).abs().max() < 1e-4


def test_two_loras_with_scales(pipe, tiny_pipeline_dir, tmp_path):
    p1 = _lora_file(pipe, tmp_path, seed=1)
    fresh = load_pipeline(tiny_pipeline_dir)
    p2 = _lora_file(fresh, tmp_path, seed=2)
    both = load_pipeline(tiny_pipeline_dir)
    names = apply_loras(both, [f"{p1}:1", f"{p2}:1"]).names
    assert len(names) == 2
    only_first = load_pipeline(tiny_pipeline_dir)
    apply_loras(only_first, [f"{p1}:1", f"{p2}:0"])
    first = load_pipeline(tiny_pipeline_dir)
    apply_loras(first, [str(p1)])
    np.testing.assert_array_equal(_frames(only_first), _frames(first))
    assert np.abs(_frames(both) - _frames(first)).mean() > 0.5
