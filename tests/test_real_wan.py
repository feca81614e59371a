"""`--base DIR` with the component classes of real Wan 2.1 checkpoints (UMT5 text encoder,
16-channel VAE latents, stock scheduler), tiny and random, built here: nothing downloaded."""

import pytest
import torch
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    WanPipeline,
    WanTransformer3DModel,
)

from cameo.cli import main
from cameo.data.world_folders import write_person_folder
from conftest import train_argv

WORDS = [
    "mike",
    "a",
    "man",
    "woman",
    "with",
    "short",
    "long",
    "red",
    "black",
    "hair",
    "speaking",
    "silent",
    "in",
    "front",
    "of",
    "blue",
    "green",
    "wall",
    ",",
    "photo",
]


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {
        "<pad>": 0,
        "</s>": 1,
        "<unk>": 2,
        **{w: i + 3 for i, w in enumerate(dict.fromkeys(WORDS))},
    }
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def wan21_dir(tmp_path_factory):
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    tok = _tokenizer()
    enc = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tok),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
        )
    ).eval()
    vae = AutoencoderKLWan(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
    )
    pipe = WanPipeline(
        tokenizer=tok,
        text_encoder=enc,
        vae=vae,
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
    )
    path = tmp_path_factory.mktemp("wan21") / "Wan2.1-tiny"
    pipe.save_pretrained(path)
    return path


def test_train_and_generate_on_a_umt5_wan_checkpoint(wan21_dir, tmp_path):
    photos = write_person_folder(2, tmp_path / "photos", 5)
    out = tmp_path / "run"
    # the world's 64x64 photos at 64x64: Wan's own 480x832 would enlarge them over 2x
    assert main(train_argv(photos, wan21_dir, out, "--height", "64", "--width", "64")) == 0
    lora = out / "mike.safetensors"
    clip = tmp_path / "c.mp4"
    assert (
        main(
            [
                "generate",
                "mike, speaking, in front of a blue wall",
                "--base",
                str(wan21_dir),
                "--lora",
                str(lora),
                "--out",
                str(clip),
                "--frames",
                "5",
                "--height",
                "32",
                "--width",
                "32",
                "--steps",
                "2",
            ]
        )
        == 0
    )
    assert clip.stat().st_size > 0
    # The same file refuses to load onto cameo-style tiny weights of another shape.
    from cameo.lora_files import read_metadata

    assert read_metadata(lora)["cameo.base_hash"]


@pytest.fixture(scope="module")
def wan22_dir(tmp_path_factory, wan21_dir):
    """Wan 2.2 A14B layout: a high-noise `transformer` and a low-noise `transformer_2`."""
    pipe = WanPipeline.from_pretrained(wan21_dir)
    torch.manual_seed(1)
    second = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
    )
    two = WanPipeline(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        vae=pipe.vae,
        transformer=pipe.transformer,
        transformer_2=second,
        scheduler=pipe.scheduler,
        boundary_ratio=0.875,
    )
    path = tmp_path_factory.mktemp("wan22") / "Wan2.2-tiny"
    two.save_pretrained(path)
    return path


def test_wan22_two_experts_each_get_their_lora(wan22_dir, tmp_path):
    from cameo.generation import apply_loras
    from cameo.lora_files import read_metadata
    from cameo.models import load_pipeline

    photos = write_person_folder(2, tmp_path / "photos", 5)
    files = {}
    for expert in ("high", "low"):
        out = tmp_path / expert
        argv = train_argv(
            photos, wan22_dir, out, "--expert", expert, "--height", "64", "--width", "64"
        )
        assert main(argv) == 0
        files[expert] = out / "mike.safetensors"
        assert read_metadata(files[expert])["cameo.expert"] == expert
    pipe = load_pipeline(wan22_dir)
    apply_loras(pipe, [str(files["high"]), str(files["low"])])
    assert any("lora_" in n for n, _ in pipe.transformer.named_parameters())
    assert any("lora_" in n for n, _ in pipe.transformer_2.named_parameters())
    clip = tmp_path / "c.mp4"
    assert (
        main(
            [
                "generate",
                "mike, speaking",
                "--base",
                str(wan22_dir),
                "--lora",
                str(files["high"]),
                "--lora",
                str(files["low"]),
                "--out",
                str(clip),
                "--frames",
                "5",
                "--height",
                "32",
                "--width",
                "32",
                "--steps",
                "2",
            ]
        )
        == 0
    )
