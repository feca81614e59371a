"""`cameo pretrain --task i2v` on tiny settings: a text-to-video run's VAE and transformer
start an image-to-video one (the warm start predicts what its source predicts), the stage
trains on each clip's first-frame condition and resumes exactly, and the export is a stock
``WanImageToVideoPipeline`` directory."""

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline
from PIL import Image

from cameo.cli import main
from cameo.models.first_frame import encode_first_frame
from cameo.models.wan import _link_minilm
from cameo.pretrain import run_pretrain, warm_start
from cameo.pretrain.data import _first_frame_conditions, _render_chunk
from cameo.pretrain.transformer import _first_frame_pipeline, _pipeline_for
from cameo.training import checkpoint as ckpt
from test_pretrain import _assert_resumed_equals_straight, _cfg, _losses, _weights


@pytest.fixture(scope="module")
def t2v(tmp_path_factory):
    """A finished tiny text-to-video run's exported pipeline (its VAE and transformer)."""
    return run_pretrain(_cfg(tmp_path_factory.mktemp("t2v") / "run", steps=2))


def _i2v(out, t2v, **kw):
    settings = dict(task="i2v", stage="transformer", vae_from=str(t2v), init_transformer=str(t2v))
    return _cfg(out, **{**settings, **kw})


def _i2v_model():
    """A freshly initialised tiny image-to-video transformer (the tests' seed), and its config."""
    cfg = _cfg("unused", task="i2v")
    cfg.transformer.image_to_video = True
    torch.manual_seed(0)
    return cfg.transformer.build().eval(), cfg


def _warm_started(t2v, with_record: bool = False):
    model = _i2v_model()[0]
    record = warm_start(model, str(t2v))
    return (model, record) if with_record else model


def test_warm_start_reads_the_first_frame_at_zero_weight(t2v):
    """An image-to-video transformer warm-started from a text-to-video one predicts exactly
    what that one predicts, whatever the first-frame condition; its other weights are the
    source's and its new input channels are zero (fresh ones are not, so this can fail)."""
    source = WanPipeline.from_pretrained(t2v).transformer.float().eval()
    c = source.config.in_channels
    fresh = _i2v_model()[0].state_dict()["patch_embedding.weight"][:, c:]
    assert fresh.abs().sum() > 0
    model, record = _warm_started(t2v, with_record=True)
    assert record["grown"] == ["patch_embedding.weight"] and record["fresh"] == []
    weight = model.state_dict()["patch_embedding.weight"]
    assert weight.shape[1] == 2 * c + 4 and torch.equal(weight[:, c:], torch.zeros_like(fresh))
    x = torch.randn(2, c, 2, 4, 4)  # (B, C, F, h, w)
    condition = torch.randn(2, c + 4, 2, 4, 4)  # mask (4) and first-frame latents
    text, t = torch.randn(2, 7, 384), torch.tensor([300.0, 800.0])
    with torch.no_grad():
        before = source(hidden_states=x, timestep=t, encoder_hidden_states=text).sample
        hidden = torch.cat([x, condition], dim=1)
        after = model(hidden_states=hidden, timestep=t, encoder_hidden_states=text).sample
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_i2v_stage_trains_on_first_frames_and_resumes_exactly(t2v, tmp_path):
    """The stage caches each sample's condition (a photo's is the photo: mask all ones, its
    own latents), learns to read it (the zero channels move), and a stage stopped after one
    step and resumed ends where an uninterrupted one does."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    steps = dict(steps=3, warmup=1, checkpoint_every=100, lr=1e-3)
    assert run_pretrain(_i2v(straight, t2v, **steps)) is not None
    cache = torch.load(straight / "cache.pt", weights_only=True)
    photos = cache["groups"]["image"]
    c = photos["latents"].shape[1]
    assert photos["conditions"].shape[1] == c + 4
    assert torch.equal(photos["conditions"][:, :4], torch.ones_like(photos["conditions"][:, :4]))
    torch.testing.assert_close(
        photos["conditions"][:, 4:].float(), photos["latents"].float(), rtol=0, atol=2e-2
    )
    clips = cache["groups"]["clip"]["conditions"]  # (N, 4 + C, F', h, w): only frame 0 given
    assert clips[:, :4, 0].min() == 1 and clips[:, :4, 1:].max() == 0

    stopped.mkdir()
    shutil.copy(straight / "cache.pt", stopped / "cache.pt")
    assert run_pretrain(_i2v(stopped, t2v, max_minutes=1e-9, **steps), resume=True) is None
    assert ckpt.latest(stopped / "transformer").name == "step-0000001"
    assert run_pretrain(_i2v(stopped, t2v, **steps), resume=True) is not None
    trained = _weights(straight, "transformer")["patch_embedding.weight"]
    assert trained[:, c:].abs().sum() > 0  # the first-frame channels left zero
    start = _warm_started(t2v).state_dict()
    _assert_resumed_equals_straight(stopped, straight, "transformer", start)
    assert _losses(stopped) == _losses(straight)


def test_exported_i2v_model_loads_in_stock_diffusers_and_animates_a_frame(t2v, tmp_path):
    out = tmp_path / "run"
    assert run_pretrain(_i2v(out, t2v, steps=1)) == out / "cameo-tiny-i2v"
    dest = tmp_path / "shipped"
    assert main(["model", "export", "--run", str(out), "--to", str(dest)]) == 0
    index = json.loads((dest / "model_index.json").read_text())
    assert index["_class_name"] == "WanImageToVideoPipeline"
    assert index["image_encoder"] == [None, None]
    card = (dest / "README.md").read_text()
    assert card.startswith("# cameo-tiny-i2v") and "--task i2v" in card
    assert "first-frame input channels" in card and "--vae-from" in card
    assert "_name_or_path" not in (dest / "vae" / "config.json").read_text()
    _link_minilm(dest)  # as cameo does for a shipped model on first use
    pipe = WanImageToVideoPipeline.from_pretrained(dest)
    pipe.set_progress_bar_config(disable=True)
    image = Image.fromarray(np.full((32, 32, 3), 200, np.uint8))
    video = pipe(
        image=image,
        prompt="a person",
        height=32,
        width=32,
        num_frames=5,
        num_inference_steps=2,
        max_sequence_length=16,
        output_type="np",
    ).frames[0]
    assert video.shape == (5, 32, 32, 3) and np.isfinite(video).all()


def test_cached_conditions_are_the_pipelines_own(t2v):
    """The cache's batched first-frame conditions equal ``encode_first_frame`` clip by clip
    (the pipeline's own encoding at generation), to float rounding."""
    cfg = _i2v("unused", t2v)
    pipe = _pipeline_for(AutoencoderKLWan.from_pretrained(t2v / "vae").float().eval())
    first_pipe = _first_frame_pipeline(pipe, _i2v_model()[0])
    pixels, _ = _render_chunk(cfg, [0, 1, 2], cfg.frames, False, 0)
    batched = _first_frame_conditions(first_pipe, pixels)
    exact = torch.cat([encode_first_frame(first_pipe, p)["condition"] for p in pixels])
    assert batched.shape == exact.shape == (3, 4 + 4, 2, 4, 4)  # mask + C, F', h, w
    assert exact[1:, 4:].abs().max() > 0.1
    torch.testing.assert_close(batched, exact, rtol=0, atol=1e-5)


def test_i2v_settings_are_checked(t2v, tmp_path):
    with pytest.raises(ValueError, match="--task"):
        run_pretrain(_cfg(tmp_path / "a", task="v2v"))
    with pytest.raises(ValueError, match="--vae-from replaces the VAE stage"):
        run_pretrain(_cfg(tmp_path / "b", task="i2v", stage="vae", vae_from=str(t2v)))
    with pytest.raises(ValueError, match="differs from the run's"):
        run_pretrain(_i2v(tmp_path / "c", "cameo-tiny"))  # cameo-tiny's VAE is not the tiny one
