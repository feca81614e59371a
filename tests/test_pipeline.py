"""The cameo pipeline directory is a stock diffusers WanPipeline: load, generate, round-trip."""

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from diffusers import WanPipeline

from cameo.generation import GenerateConfig, generate_frames, sampling_scheduler
from cameo.models import encode_prompts, load_pipeline, save_pipeline_dir

SMALL = dict(frames=5, height=32, width=32, steps=2, guidance=3.0)


def _cfg(prompt="a woman with long red hair, speaking, in front of a blue wall", **kw):
    return GenerateConfig(prompt=prompt, **{**SMALL, **kw})


def test_stock_from_pretrained_loads_without_umt5_warning(tiny_pipeline_dir, caplog):
    with caplog.at_level(logging.WARNING):
        pipe = load_pipeline(tiny_pipeline_dir)
    assert isinstance(pipe, WanPipeline)
    assert type(pipe.text_encoder).__name__ == "BertModel"
    assert not [r for r in caplog.records if "Expected types" in r.getMessage()]
    # And a plain diffusers call, with no cameo code on the path, loads it too.
    plain = WanPipeline.from_pretrained(tiny_pipeline_dir)
    assert plain.transformer.config.num_layers == 2


def test_generation_shape_and_seeded_determinism(tiny_pipeline_dir):
    pipe = load_pipeline(tiny_pipeline_dir)
    a = generate_frames(pipe, _cfg(seed=1))
    b = generate_frames(pipe, _cfg(seed=1))
    c = generate_frames(pipe, _cfg(seed=2))
    assert a.shape == (5, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_prompt_changes_the_output(tiny_pipeline_dir):
    pipe = load_pipeline(tiny_pipeline_dir)
    torch.manual_seed(0)
    for p in pipe.transformer.parameters():  # random init keeps cross-attention outputs tiny
        p.data.add_(torch.randn_like(p) * 0.05)
    a = generate_frames(pipe, _cfg(prompt="a bald man, silent, on a red backdrop"))
    b = generate_frames(
        pipe, _cfg(prompt="a woman with long blonde hair, smiling, in a green room")
    )
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.5


def test_save_load_round_trip_reproduces_output(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(tiny_pipeline_dir)
    before = generate_frames(pipe, _cfg(seed=3))
    out = save_pipeline_dir(tmp_path / "copy", pipe.vae, pipe.transformer, pipe.scheduler)
    after = generate_frames(load_pipeline(out), _cfg(seed=3))
    np.testing.assert_array_equal(before, after)


def test_prompt_embeddings_match_the_pipeline_padding(tiny_pipeline_dir):
    pipe = load_pipeline(tiny_pipeline_dir)
    e = encode_prompts(pipe, ["a man", "a woman with long red hair, speaking"])
    assert e.shape == (2, 64, 384)
    # Wan zero-pads past each prompt's own length, so a short prompt has more zero rows.
    zero_rows = (e.abs().sum(-1) == 0).sum(1)
    assert zero_rows[0] > zero_rows[1] > 0


def test_sampling_shift_changes_the_clip_and_leaves_the_scheduler(tiny_pipeline_dir):
    pipe = load_pipeline(tiny_pipeline_dir)
    torch.manual_seed(0)
    for p in pipe.transformer.parameters():  # a random model predicts ~0: make it move
        p.data.add_(torch.randn_like(p) * 0.05)
    own = pipe.scheduler.config.shift
    default = generate_frames(pipe, _cfg(seed=4))
    np.testing.assert_array_equal(default, generate_frames(pipe, _cfg(seed=4, shift=own)))
    shifted = generate_frames(pipe, _cfg(seed=4, shift=own * 4))
    assert not np.array_equal(shifted, default)
    assert pipe.scheduler.config.shift == own  # swapped back after the call
    np.testing.assert_array_equal(default, generate_frames(pipe, _cfg(seed=4)))


def test_samplers_keep_the_shift_and_wan_schedulers_take_flow_shift():
    from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

    wan = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, solver_order=3
    )
    assert sampling_scheduler(wan) is wan
    shifted = sampling_scheduler(wan, shift=5.0)
    assert shifted.config.flow_shift == 5.0 and shifted.config.solver_order == 3
    assert wan.config.flow_shift == 3.0  # the base's own is left alone
    euler = sampling_scheduler(wan, "euler")
    assert isinstance(euler, FlowMatchEulerDiscreteScheduler) and euler.config.shift == 3.0
    wan.set_timesteps(8)
    shifted.set_timesteps(8)
    assert shifted.sigmas[1] > wan.sigmas[1]  # a larger shift stays at high noise longer


@pytest.mark.parametrize("sampler", ["unipc", "dpm++"])
def test_other_samplers_generate_other_clips(tiny_pipeline_dir, sampler):
    pipe = load_pipeline(tiny_pipeline_dir)
    torch.manual_seed(0)
    for p in pipe.transformer.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    cfg = _cfg(seed=5, steps=4)
    euler = generate_frames(pipe, cfg)
    other = generate_frames(pipe, replace(cfg, sampler=sampler))
    assert other.shape == euler.shape and not np.array_equal(other, euler)
    np.testing.assert_array_equal(euler, generate_frames(pipe, replace(cfg, sampler="euler")))


@pytest.mark.parametrize(
    "bad",
    [
        dict(frames=4),
        dict(height=30),
        dict(steps=0),
        dict(prompt="  "),
        dict(shift=-1.0),
        dict(sampler="ddim"),
    ],
)
def test_bad_generation_settings_are_refused(bad):
    with pytest.raises(ValueError):
        _cfg(**bad).validate()
