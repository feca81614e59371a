"""Every export of every target set cameo trains loads in stock diffusers and gives the native
file's clip: a LoRA with non-zero B is written by cameo, converted to diffusers, ComfyUI and kohya
keys, and each file is loaded with nothing but ``WanPipeline.load_lora_weights``."""

import pytest
import torch
from diffusers import WanPipeline

from cameo.cli import main
from cameo.formats import ConversionError, convert_state_dict, layer_shapes, to_canonical
from cameo.lora import DEFAULT_TARGETS, LoraSpec, adapter_state_dict, add_lora
from cameo.lora_files import base_layer_shapes, convert_file, read_lora_file, save_lora_file
from conftest import TINY_TRANSFORMER, tiny_parts

TARGET_SETS = {
    "default": LoraSpec(rank=4, alpha=2.0),
    "ffn": LoraSpec(rank=4, alpha=2.0, ffn=True),
    "custom": LoraSpec(rank=4, alpha=2.0, targets="attn1.to_q,attn1.to_v"),
}
EXPORTS = ("diffusers", "comfyui", "kohya")


def _lora_file(base_dir, spec, path, base=None, pipeline=WanPipeline):
    """A cameo LoRA for ``base_dir`` whose B matrices are not zero (so it changes the clip);
    its metadata names ``base`` (default: ``base_dir``) as the base model."""
    pipe = pipeline.from_pretrained(base_dir)
    add_lora(pipe.transformer, spec)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in pipe.transformer.named_parameters():
            if "lora_" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    meta = {"trigger": "mike", "base": str(base if base is not None else base_dir)}
    return save_lora_file(path, adapter_state_dict(pipe.transformer), spec, meta)


def _latents(pipe) -> torch.Tensor:
    """A short clip's latents, with fixed prompt embeddings and seed (no text encoder)."""
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, 6, pipe.transformer.config.text_dim, generator=g)
    return pipe(
        prompt_embeds=embeds,
        num_frames=5,
        height=32,
        width=32,
        num_inference_steps=2,
        guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    ).frames


@pytest.mark.parametrize("targets", list(TARGET_SETS))
def test_every_export_loads_in_stock_diffusers_and_gives_the_native_clip(
    tiny_pipeline_dir, tmp_path, targets
):
    spec = TARGET_SETS[targets]
    native = _lora_file(tiny_pipeline_dir, spec, tmp_path / "native.safetensors")
    pipe = WanPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    base = _latents(pipe)
    pipe.load_lora_weights(str(native))
    want = _latents(pipe)
    pipe.unload_lora_weights()
    assert (want - base).abs().max() > 1e-2, "the LoRA must change the clip, or nothing is tested"
    assert torch.equal(_latents(pipe), base)
    for fmt in EXPORTS:
        out = tmp_path / f"{fmt}.safetensors"
        convert_file(native, out, fmt)
        pipe.load_lora_weights(str(out))  # diffusers' own reader for the format
        got = _latents(pipe)
        pipe.unload_lora_weights()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=f"{targets} as {fmt}")


def test_default_targets_are_the_ones_tested():
    assert TARGET_SETS["default"].target_list() == DEFAULT_TARGETS.split(",")


def test_cli_kohya_export_of_a_default_lora(tiny_pipeline_dir, tmp_path):
    """``cameo convert --to kohya`` finds the feed-forward sizes from the file's base model;
    the file holds every module diffusers' reader asks for, and reads back as the same LoRA."""
    native = _lora_file(tiny_pipeline_dir, LoraSpec(rank=4), tmp_path / "native.safetensors")
    out = tmp_path / "kohya.safetensors"
    assert main(["convert", str(native), str(out), "--to", "kohya"]) == 0
    sd, meta = read_lora_file(out)
    per_block = {
        k.split("_", 4)[-1].split(".")[0] for k in sd if k.startswith("lora_unet_blocks_0_")
    }
    assert per_block == {
        *(f"{a}_attn_{p}" for a in ("self", "cross") for p in "qkvo"),
        "ffn_0",
        "ffn_2",
    }
    back, _ = to_canonical(sd, meta)
    want, _ = to_canonical(*read_lora_file(native))
    assert back.keys() == want.keys()  # the zero padding reads back as nothing
    assert all(torch.equal(back[m].up, want[m].up) for m in want)


def test_kohya_export_without_the_base_model_says_what_it_needs(tiny_pipeline_dir, tmp_path):
    native = _lora_file(
        tiny_pipeline_dir, LoraSpec(rank=4), tmp_path / "n.safetensors", base=tmp_path / "gone"
    )
    with pytest.raises(
        ConversionError, match=r"ffn\.net\.0\.proj, ffn\.net\.2.*give the base model"
    ):
        convert_file(native, tmp_path / "k.safetensors", "kohya")
    assert not (tmp_path / "k.safetensors").exists()
    convert_file(native, tmp_path / "k.safetensors", "kohya", base=tiny_pipeline_dir)
    sd, meta = read_lora_file(native)
    with pytest.raises(ConversionError, match="give the base model"):
        convert_state_dict(sd, "kohya", meta)


def test_layer_shapes_are_the_models(tiny_pipeline_dir):
    _, transformer = tiny_parts()
    shapes = layer_shapes(TINY_TRANSFORMER)
    assert base_layer_shapes(tiny_pipeline_dir) == shapes
    layers = dict(transformer.named_modules())
    for name, (out_features, in_features) in shapes.items():
        layer = layers[f"blocks.1.{name}"]
        assert (layer.out_features, layer.in_features) == (out_features, in_features), name
    builtin = base_layer_shapes("cameo-tiny")
    assert builtin["ffn.net.0.proj"] == (512, 128) and builtin["attn1.to_q"] == (128, 128)
