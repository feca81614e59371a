"""LoRA key formats: round trips between every pair, coverage errors, and a cross-check against
diffusers' own converters (written by others), which must give the same clip as our native file."""

import itertools

import numpy as np
import pytest
import torch
from diffusers import WanPipeline
from safetensors.torch import load_file, save_file

from cameo.cli import main
from cameo.formats import FORMATS, ConversionError, convert_state_dict, detect_format, to_canonical
from cameo.generation import GenerateConfig, generate_frames
from cameo.lora import LoraSpec, adapter_state_dict, add_lora, load_adapter
from cameo.lora_files import read_lora_file, save_lora_file
from cameo.models import load_pipeline

GEN = dict(
    prompt="mike, speaking, in front of a blue wall",
    frames=5,
    height=32,
    width=32,
    steps=2,
    guidance=3.0,
    seed=0,
)


@pytest.fixture(scope="module")
def native(tiny_pipeline_dir, tmp_path_factory):
    """A cameo LoRA with alpha != rank and the FFN adapted (so all converters have work)."""
    pipe = load_pipeline(tiny_pipeline_dir)
    spec = LoraSpec(rank=4, alpha=2.0, ffn=True)
    add_lora(pipe.transformer, spec)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in pipe.transformer.named_parameters():
            if "lora_" in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    path = tmp_path_factory.mktemp("fmt") / "native.safetensors"
    save_lora_file(path, adapter_state_dict(pipe.transformer), spec, {"trigger": "mike"})
    return path


def _modules(path):
    sd, meta = read_lora_file(path)
    return to_canonical(sd, meta)[0]


@pytest.mark.parametrize(("a", "b"), list(itertools.permutations(FORMATS, 2)))
def test_round_trip_every_pair(native, tmp_path, a, b):
    sd, meta = read_lora_file(native)
    first, m1, _ = convert_state_dict(sd, a, meta)
    second, m2, cov = convert_state_dict(first, b, m1)
    back, _, _ = convert_state_dict(second, "diffusers", m2)
    assert detect_format(second) == b and cov.keys_in == len(first)
    orig = to_canonical(sd, meta)[0]
    again = to_canonical(back, convert_state_dict(second, "diffusers", m2)[1])[0]
    assert orig.keys() == again.keys()
    for k in orig:
        assert torch.equal(orig[k].down, again[k].down) and torch.equal(orig[k].up, again[k].up)
        assert orig[k].alpha == again[k].alpha == 2.0


def test_unplaceable_or_incomplete_keys_fail_loudly(native):
    sd, meta = read_lora_file(native)
    comfy, _, _ = convert_state_dict(sd, "comfyui", meta)
    bad = dict(comfy)
    bad["diffusion_model.blocks.0.mystery.lora_A.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match="match no Wan LoRA module"):
        convert_state_dict(bad, "diffusers")
    half = {k: v for k, v in comfy.items() if "blocks.0.self_attn.q.lora_B" not in k}
    with pytest.raises(ConversionError, match="lack their down or up"):
        convert_state_dict(half, "kohya")
    with pytest.raises(ConversionError, match="not a Wan LoRA"):
        convert_state_dict({"foo.weight": torch.zeros(1)}, "kohya")


@pytest.mark.parametrize("fmt", ["comfyui", "kohya"])
def test_diffusers_own_converters_give_the_same_clip(native, tiny_pipeline_dir, tmp_path, fmt):
    out = tmp_path / f"{fmt}.safetensors"
    assert main(["convert", str(native), str(out), "--to", fmt]) == 0
    expected = load_pipeline(tiny_pipeline_dir)
    expected.load_lora_weights(str(native), adapter_name="a")
    want = generate_frames(expected, GenerateConfig(**GEN))
    stock = WanPipeline.from_pretrained(tiny_pipeline_dir)
    stock.set_progress_bar_config(disable=True)
    stock.load_lora_weights(str(out), adapter_name="b")  # diffusers' converter, not ours
    got = generate_frames(stock, GenerateConfig(**GEN))
    assert (
        np.abs(
            want.astype(int)
            - generate_frames(load_pipeline(tiny_pipeline_dir), GenerateConfig(**GEN)).astype(int)
        ).mean()
        > 0.5
    )
    assert (
        np.abs(want.astype(int) - got.astype(int)).max() <= 1
    )  # alpha folded into weights: rounding only


@pytest.mark.parametrize("fmt", ["comfyui", "kohya"])
def test_init_from_accepts_other_formats(native, tiny_pipeline_dir, tmp_path, fmt):
    out = tmp_path / f"{fmt}.safetensors"
    main(["convert", str(native), str(out), "--to", fmt])
    a, b = load_pipeline(tiny_pipeline_dir), load_pipeline(tiny_pipeline_dir)
    load_adapter(a.transformer, native, "x")
    load_adapter(b.transformer, out, "x")
    x = dict(
        hidden_states=torch.randn(1, 4, 2, 4, 4),
        timestep=torch.tensor([400.0]),
        encoder_hidden_states=torch.randn(1, 6, 384),
        return_dict=False,
    )
    with torch.no_grad():
        assert torch.allclose(a.transformer(**x)[0], b.transformer(**x)[0], atol=1e-5)


def test_convert_refuses_overwrite_and_pickles(native, tmp_path):
    out = tmp_path / "x.safetensors"
    assert main(["convert", str(native), str(out), "--to", "kohya"]) == 0
    assert main(["convert", str(native), str(out), "--to", "kohya"]) == 3
    pt = tmp_path / "evil.pt"
    torch.save({"a": torch.zeros(1)}, pt)
    assert main(["convert", str(pt), str(tmp_path / "y.safetensors"), "--to", "kohya"]) == 2


def test_keys_for_another_model_are_an_error(native, tiny_pipeline_dir, tmp_path):
    sd = load_file(str(native))
    sd = {k.replace("blocks.1.", "blocks.7."): v for k, v in sd.items()}
    bad = tmp_path / "other.safetensors"
    save_file(sd, str(bad), metadata=read_lora_file(native)[1])
    pipe = load_pipeline(tiny_pipeline_dir)
    with pytest.raises(ValueError, match="match no layer"):
        load_adapter(pipe.transformer, bad, "x")


def test_malformed_metadata_and_matrices_are_conversion_errors(native):
    sd, meta = read_lora_file(native)
    bad_meta = [
        ("{not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"transformer.lora_alpha": "many"}', "malformed alpha"),
        ('{"transformer.alpha_pattern": {"(": 1.0}}', "malformed alpha"),
    ]
    for text, reason in bad_meta:
        with pytest.raises(ConversionError, match=reason) as e:
            convert_state_dict(sd, "kohya", {**meta, "lora_adapter_metadata": text})
        assert type(e.value) is ConversionError
    a, b = (
        "transformer.blocks.0.attn1.to_q.lora_A.weight",
        "transformer.blocks.0.attn1.to_q.lora_B.weight",
    )
    for bad in ({a: sd[a][0]}, {b: sd[b][:, :2]}):
        with pytest.raises(ConversionError, match="not the two matrices of one low-rank change"):
            convert_state_dict({**sd, **bad}, "comfyui", meta)
    comfy, _, _ = convert_state_dict(sd, "comfyui", meta)
    alpha = "diffusion_model.blocks.0.self_attn.q.alpha"
    with pytest.raises(ConversionError, match="alpha has 2 values"):
        convert_state_dict({**comfy, alpha: torch.ones(2)}, "diffusers")
