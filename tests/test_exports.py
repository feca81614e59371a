"""Every export of every target set cameo trains loads in stock diffusers and gives the native
file's clip: a LoRA with non-zero B is written by cameo, converted to diffusers, ComfyUI and kohya
keys, and each file is loaded with nothing but ``WanPipeline.load_lora_weights``."""

import pytest
import torch
from diffusers import WanPipeline

from cameo.lora import DEFAULT_TARGETS, LoraSpec, adapter_state_dict, add_lora
from cameo.lora_files import convert_file, save_lora_file

TARGET_SETS = {
    "default": LoraSpec(rank=4, alpha=2.0),
    "ffn": LoraSpec(rank=4, alpha=2.0, ffn=True),
    "custom": LoraSpec(rank=4, alpha=2.0, targets="attn1.to_q,attn1.to_v"),
}
EXPORTS = ("diffusers", "comfyui", "kohya")


def _lora_file(base_dir, spec, path):
    """A cameo LoRA for ``base_dir`` whose B matrices are not zero (so it changes the clip)."""
    pipe = WanPipeline.from_pretrained(base_dir)
    add_lora(pipe.transformer, spec)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in pipe.transformer.named_parameters():
            if "lora_" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    meta = {"trigger": "mike", "base": str(base_dir)}
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
