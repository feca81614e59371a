"""Image-to-video bases on tiny random configs of the real classes: the three layouts diffusers'
``WanImageToVideoPipeline`` serves (channel concatenation without an image encoder, as Wan 2.2
I2V A14B and cameo-tiny-i2v; with Wan 2.1's CLIP image encoder; TI2V-5B's first-frame
replacement), trained, generated, exported and reloaded in stock diffusers."""

import json

import numpy as np
import pytest
import torch
from diffusers import WanImageToVideoPipeline, WanTransformer3DModel
from PIL import Image
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

from cameo.cli import main
from cameo.data.world_folders import write_person_folder
from cameo.diffusion import FirstFrame, flow_matching_loss
from cameo.generation import GenerateConfig, generate_clip
from cameo.lora import LoraSpec, add_lora, lora_parameters
from cameo.lora_files import convert_file
from cameo.models import TransformerConfig, VAEConfig, fast, load_pipeline, save_pipeline_dir
from cameo.models.first_frame import encode_first_frame
from conftest import TINY_TRANSFORMER, TINY_VAE, train_argv
from test_exports import _lora_file
from test_real_wan import wan21_dir  # noqa: F401  (a fixture: the UMT5 text side of Wan 2.1)

SIZE = dict(height=32, width=32, frames=5)


def _i2v_transformer(**extra) -> WanTransformer3DModel:
    return TransformerConfig(**{**TINY_TRANSFORMER, **extra}, image_to_video=True).build().eval()


@pytest.fixture(scope="module")
def i2v_dir(tmp_path_factory):
    """cameo-tiny-i2v's layout (and Wan 2.2 I2V A14B's): no image encoder, the condition
    concatenated to the latents (4 + 4 + 4 input channels)."""
    torch.manual_seed(0)
    vae = VAEConfig(**TINY_VAE).build().eval()
    path = tmp_path_factory.mktemp("i2v") / "pipe"
    return save_pipeline_dir(path, vae, _i2v_transformer(), pipeline="WanImageToVideoPipeline")


@pytest.fixture(scope="module")
def wan21_i2v_dir(tmp_path_factory, wan21_dir):  # noqa: F811
    """Wan 2.1 I2V's layout: UMT5 text, a CLIP image encoder whose features the transformer
    reads through its own image keys and values (``add_k_proj``/``add_v_proj``)."""
    from diffusers import WanPipeline

    t2v = WanPipeline.from_pretrained(wan21_dir)
    torch.manual_seed(2)
    clip = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=8,
            projection_dim=8,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            intermediate_size=16,
            patch_size=8,
        )
    ).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=36,
        out_channels=16,
        text_dim=32,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
        image_dim=8,
        added_kv_proj_dim=16,
    )
    pipe = WanImageToVideoPipeline(
        tokenizer=t2v.tokenizer,
        text_encoder=t2v.text_encoder,
        vae=t2v.vae,
        scheduler=t2v.scheduler,
        image_processor=CLIPImageProcessor(crop_size=32, size=32),
        image_encoder=clip,
        transformer=transformer,
    )
    path = tmp_path_factory.mktemp("wan21i2v") / "Wan2.1-I2V-tiny"
    pipe.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ti2v_dir(tmp_path_factory):
    """TI2V-5B's layout: a ``WanPipeline`` directory with ``expand_timesteps``, whose first
    latent frame is replaced by the given frame's latents (no extra channels)."""
    torch.manual_seed(3)
    vae = VAEConfig(**TINY_VAE).build().eval()
    transformer = TransformerConfig(**TINY_TRANSFORMER).build().eval()
    path = save_pipeline_dir(tmp_path_factory.mktemp("ti2v") / "pipe", vae, transformer)
    index = json.loads((path / "model_index.json").read_text())
    (path / "model_index.json").write_text(json.dumps({**index, "expand_timesteps": True}))
    return path


def _frames(seed: int = 0, n: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _transformer_calls(pipe, image: Image.Image, prompt: str = "mike, speaking") -> list[dict]:
    """Every keyword input of the pipeline's transformer calls, for one short clip."""
    seen = []
    hook = pipe.transformer.register_forward_pre_hook(
        lambda _m, _a, kw: seen.append({k: v for k, v in kw.items() if torch.is_tensor(v)}),
        with_kwargs=True,
    )
    try:
        pipe(
            image=image,
            prompt=prompt,
            height=32,
            width=32,
            num_frames=5,
            num_inference_steps=2,
            guidance_scale=1.0,
            max_sequence_length=64 if "Bert" in type(pipe.text_encoder).__name__ else 512,
            output_type="latent",
        )
    finally:
        hook.remove()
    return seen


@pytest.mark.parametrize("layout", ["concat", "clip", "replace"])
def test_the_condition_is_the_first_frame_as_the_pipeline_gives_it(
    layout, i2v_dir, wan21_i2v_dir, ti2v_dir
):
    base = {"concat": i2v_dir, "clip": wan21_i2v_dir, "replace": ti2v_dir}[layout]
    pipe = load_pipeline(base, image_to_video=True)
    assert isinstance(pipe, WanImageToVideoPipeline)
    frames = _frames()
    got = encode_first_frame(pipe, frames)
    calls = _transformer_calls(pipe, Image.fromarray(frames[0]))
    c = pipe.vae.config.z_dim
    for call in calls:
        hidden = call["hidden_states"]
        if layout == "replace":  # the first latent frame is the condition, read at t = 0
            torch.testing.assert_close(hidden[:, :, :1], got["condition"][:, :, :1])
            tokens = call["timestep"][0]  # (tokens,)
            assert torch.equal(tokens == 0, got["token_mask"][0] == 0)
            assert (
                got["token_mask"][0] == 0
            ).sum() == 4  # the first frame: 4x4 latents, 2x2 patches
        else:
            torch.testing.assert_close(hidden[:, c:], got["condition"])
    if layout == "clip":
        torch.testing.assert_close(calls[0]["encoder_hidden_states_image"], got["image_embeds"])
    # another first frame, another condition: it is read from the frame, nothing else
    other = encode_first_frame(pipe, _frames(1))
    assert not torch.equal(other["condition"], got["condition"])


def test_first_frame_replacement_leaves_the_given_frame_out_of_the_loss():
    x0 = torch.randn(2, 4, 3, 4, 4)
    mask = torch.ones(2, 1, 3, 4, 4)
    mask[:, :, 0] = 0
    first = FirstFrame(x0, frame_mask=mask, token_mask=torch.ones(2, 3 * 4))

    def model(hidden_states, timestep, encoder_hidden_states, return_dict):
        out = torch.zeros_like(hidden_states)
        out[:, :, 0] = 100.0  # whatever it says about the given frame does not count
        return (out,)

    noise, sigmas = torch.randn_like(x0), torch.tensor([0.3, 0.8])
    loss = flow_matching_loss(model, x0, torch.zeros(2, 1, 8), sigmas, noise, first=first)
    want = ((noise - x0)[:, :, 1:] ** 2).mean(dim=(1, 2, 3, 4))
    torch.testing.assert_close(loss, want)


def _person(tmp_path, clips: int = 2):
    return write_person_folder(2, tmp_path / "photos", 4, clips=clips)


def test_image_to_video_train_then_generate(i2v_dir, tmp_path):
    photos = _person(tmp_path)
    out = tmp_path / "run"
    argv = train_argv(photos, i2v_dir, out, "--height", "32", "--width", "32", steps=4)
    assert main([*argv, "--lr", "2e-2", "--disk-cache"]) == 0
    lora = out / "mike.safetensors"
    # the first frames of both clips and all four photos were encoded and cached
    assert len(list((out / "cache" / "first").glob("*.safetensors"))) == 6
    image = str(photos / "photo_000.png")
    cfg = GenerateConfig(
        prompt="mike, speaking", base=str(i2v_dir), image=image, steps=2, **SIZE, fps=8
    )
    plain = generate_clip(cfg)
    with_lora = generate_clip(GenerateConfig(**{**cfg.__dict__, "lora": [str(lora)]}))
    again = generate_clip(GenerateConfig(**{**cfg.__dict__, "lora": [str(lora)]}))
    assert plain.shape == (5, 32, 32, 3)
    assert np.abs(with_lora.astype(int) - plain).max() > 0, "the LoRA must change the clip"
    assert np.array_equal(with_lora, again), "reloading the file gives the same clip"
    off = generate_clip(GenerateConfig(**{**cfg.__dict__, "lora": [f"{lora}:0"]}))
    assert np.array_equal(off, plain), "at scale 0 the LoRA is not there"
    other = generate_clip(
        GenerateConfig(**{**cfg.__dict__, "image": str(photos / "photo_001.png")})
    )
    assert not np.array_equal(other, plain), "the clip follows its first frame"
    # the command line writes the same clip
    mp4 = tmp_path / "c.mp4"
    assert main(["generate", "mike, speaking", "--base", str(i2v_dir), "--image", image,
                 "--lora", str(lora), "--out", str(mp4), "--frames", "5", "--height", "32",
                 "--width", "32", "--steps", "2"]) == 0  # fmt: skip
    assert mp4.stat().st_size > 0


def test_clip_image_features_train_on_a_wan21_layout(wan21_i2v_dir, tmp_path):
    photos = _person(tmp_path, clips=1)
    out = tmp_path / "run"
    argv = train_argv(photos, wan21_i2v_dir, out, "--height", "32", "--width", "32", steps=2)
    assert main(argv) == 0
    assert (out / "mike.safetensors").is_file()


def test_ti2v_trains_for_a_first_frame_when_asked(ti2v_dir, tmp_path):
    photos = _person(tmp_path, clips=1)
    out = tmp_path / "run"
    argv = train_argv(photos, ti2v_dir, out, "--height", "32", "--width", "32", steps=2)
    assert main([*argv, "--image-to-video"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["image_to_video"] is True
    clip = generate_clip(
        GenerateConfig(
            prompt="mike",
            base=str(ti2v_dir),
            image=str(photos / "photo_000.png"),
            lora=[str(out / "mike.safetensors")],
            steps=2,
            **SIZE,
            fps=8,
        )
    )
    assert clip.shape == (5, 32, 32, 3)


@pytest.mark.parametrize(
    "targets", ["attn1.to_q,attn1.to_v,attn2.to_k", "attn2.to_k,attn2.add_k_proj,attn2.add_v_proj"]
)
def test_every_export_loads_in_stock_image_to_video_pipeline(wan21_i2v_dir, tmp_path, targets):
    spec = LoraSpec(rank=4, alpha=2.0, targets=targets)
    native = _lora_file(
        wan21_i2v_dir, spec, tmp_path / "native.safetensors", pipeline=WanImageToVideoPipeline
    )
    pipe = WanImageToVideoPipeline.from_pretrained(wan21_i2v_dir)
    pipe.set_progress_bar_config(disable=True)
    image = Image.fromarray(_frames()[0])

    def latents():
        return pipe(
            image=image,
            prompt="mike, speaking",
            height=32,
            width=32,
            num_frames=5,
            num_inference_steps=2,
            guidance_scale=1.0,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
        ).frames

    base = latents()
    pipe.load_lora_weights(str(native))
    want = latents()
    pipe.unload_lora_weights()
    assert (want - base).abs().max() > 1e-3, "the LoRA must change the clip, or nothing is tested"
    for fmt in ("diffusers", "comfyui", "kohya"):
        out = tmp_path / f"{fmt}.safetensors"
        convert_file(native, out, fmt, base=str(wan21_i2v_dir))
        pipe.load_lora_weights(str(out))  # diffusers' own reader for the format
        got = latents()
        pipe.unload_lora_weights()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=f"{targets} as {fmt}")


def test_a_first_frame_on_the_wrong_base_is_a_clear_error(
    i2v_dir, tiny_pipeline_dir, tmp_path, capsys
):
    image = tmp_path / "first.png"
    Image.fromarray(_frames()[0]).save(image)
    common = ["--out", str(tmp_path / "c.mp4"), "--frames", "5", "--height", "32", "--width",
              "32", "--steps", "1"]  # fmt: skip
    assert main(["generate", "mike", "--base", str(tiny_pipeline_dir), "--image", str(image),
                 *common]) == 2  # fmt: skip
    assert "image-to-video" in capsys.readouterr().err
    assert main(["generate", "mike", "--base", str(i2v_dir), *common]) == 2
    assert "--image" in capsys.readouterr().err
    assert main(["generate", "mike", "--base", str(i2v_dir), "--image", "nope.png",
                 *common]) == 2  # fmt: skip
    assert "does not exist" in capsys.readouterr().err


def test_eval_starts_image_to_video_clips_from_the_given_photos(i2v_dir, tmp_path):
    photos = _person(tmp_path, clips=1)
    out = tmp_path / "run"
    assert main(train_argv(photos, i2v_dir, out, "--height", "32", "--width", "32")) == 0
    others = write_person_folder(5, tmp_path / "others", 3)
    report, prompts = tmp_path / "eval.json", tmp_path / "prompts.txt"
    prompts.write_text("[trigger], speaking\n[trigger], smiling\n[trigger] in a red room\n")
    argv = ["eval", "--lora", str(out / "mike.safetensors"), "--photos", str(photos), "--base",
            str(i2v_dir), "--identity", "world", "--seeds", "1", "--first-frames", str(others),
            "--prompts", str(prompts), "--out", str(report)]  # fmt: skip
    assert main(argv) == 0
    got = json.loads(report.read_text())
    assert got["first_frames"] == str(others)
    starts = {r["first_frame"] for g in got["clips"].values() for v in g.values() for r in v}
    assert starts == {"photo_000.png", "photo_001.png", "photo_002.png"}


@pytest.fixture(scope="module")
def i2v_a14b_dir(tmp_path_factory, i2v_dir):
    """Wan 2.2 I2V A14B's layout: two concatenation experts, handing over at t = 900."""
    pipe = WanImageToVideoPipeline.from_pretrained(i2v_dir)
    torch.manual_seed(4)
    two = WanImageToVideoPipeline(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        vae=pipe.vae,
        scheduler=pipe.scheduler,
        transformer=pipe.transformer,
        transformer_2=_i2v_transformer(),
        boundary_ratio=0.9,
    )
    path = tmp_path_factory.mktemp("i2va14b") / "pipe"
    two.save_pretrained(path)
    return path


def test_both_experts_of_an_image_to_video_base_train_in_one_run(i2v_a14b_dir, tmp_path):
    photos = _person(tmp_path, clips=1)
    out = tmp_path / "run"
    argv = train_argv(photos, i2v_a14b_dir, out, "--height", "32", "--width", "32", steps=4)
    assert main([*argv, "--lr", "2e-2"]) == 0
    assert json.loads((out / "config.json").read_text())["expert"] == "both"
    assert (out / "mike_high_noise.safetensors").is_file()
    assert (out / "mike_low_noise.safetensors").is_file()
    cfg = GenerateConfig(prompt="mike, speaking", base=str(i2v_a14b_dir), steps=4, **SIZE,
                         fps=8, image=str(photos / "photo_000.png"))  # fmt: skip
    plain = generate_clip(cfg)
    both = generate_clip(
        GenerateConfig(**{**cfg.__dict__, "lora": [str(out / "mike.safetensors")]})
    )
    assert np.abs(both.astype(int) - plain).max() > 0


def test_the_fast_path_serves_concatenated_conditions_exactly():

    model = _i2v_transformer()
    add_lora(model, LoraSpec(rank=4, alpha=4))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    x0 = torch.randn(2, 4, 2, 8, 8, generator=g)
    first = FirstFrame(torch.randn(2, 8, 2, 8, 8, generator=g))
    text, noise = torch.randn(2, 5, 384, generator=g), torch.randn(x0.shape, generator=g)
    sigmas = torch.tensor([0.3, 0.7])

    def loss_and_grads():
        for p in model.parameters():
            p.grad = None
        loss = flow_matching_loss(model, x0, text, sigmas, noise, first=first).mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in lora_parameters(model)]

    plain_loss, plain_grads = loss_and_grads()
    ff = fast.enable(model)
    fast_loss, fast_grads = loss_and_grads()
    assert ff.served > 0 and not ff.fallbacks, "the fast path must have computed the step"
    torch.testing.assert_close(fast_loss, plain_loss, atol=1e-5, rtol=1e-4)
    for a, b in zip(fast_grads, plain_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_validation_previews_start_from_training_photos(i2v_dir, tmp_path):
    from cameo.training import run_training
    from conftest import train_config

    photos = _person(tmp_path, clips=1)
    out = tmp_path / "run"
    cfg = train_config(photos, i2v_dir, out, steps=2, validate_every=2, identity="world",
                       height=32, width=32)  # fmt: skip
    run_training(cfg, log=lambda m: None)
    sheets = sorted((out / "previews").glob("step00002-*.png"))
    assert sheets, "the previews were written"
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["identity_judge"] == "world" and "identity_normalised" in metrics
