"""Training defaults read from a base's own config files, one family at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cameo.models import tiny_model_dir
from cameo.models.profiles import detect_profile

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "wan"


def _wan_dir(tmp_path: Path, name: str, index: dict, transformer: dict, vae: dict, shift: float):
    """A diffusers-layout directory holding only the config files a profile reads."""
    d = tmp_path / name
    for sub, cfg in (("transformer", transformer), ("vae", vae)):
        (d / sub).mkdir(parents=True)
        (d / sub / "config.json").write_text(json.dumps(cfg))
    (d / "scheduler").mkdir()
    (d / "scheduler" / "scheduler_config.json").write_text(json.dumps({"flow_shift": shift}))
    index = {"text_encoder": ["transformers", "UMT5EncoderModel"], **index}
    (d / "model_index.json").write_text(json.dumps(index))
    return d


A14B = {"num_attention_heads": 40, "attention_head_dim": 128, "num_layers": 40}


@pytest.mark.parametrize(
    ("name", "index", "transformer", "vae", "want"),
    [
        (
            "wan21-1.3b",
            {"_class_name": "WanPipeline"},
            json.loads((CONFIGS / "Wan2.1-T2V-1.3B/transformer/config.json").read_text()),
            {"z_dim": 16},
            ("wan2.1-t2v-1.3b", 1, 2e-4, None),
        ),
        (
            "wan21-14b",
            {"_class_name": "WanPipeline"},
            json.loads((CONFIGS / "Wan2.1-T2V-14B/transformer/config.json").read_text()),
            {"z_dim": 16},
            ("wan2.1-t2v-14b", 1, 1e-4, None),
        ),
        (
            "wan22-a14b",
            {
                "_class_name": "WanPipeline",
                "transformer_2": ["diffusers", "WanTransformer3DModel"],
                "boundary_ratio": 0.875,
            },
            {**A14B, "in_channels": 16},
            {"z_dim": 16},
            ("wan2.2-t2v-a14b", 2, 1e-4, 0.875),
        ),
        (
            "wan22-i2v-a14b",
            {
                "_class_name": "WanImageToVideoPipeline",
                "transformer_2": ["diffusers", "WanTransformer3DModel"],
                "boundary_ratio": 0.9,
            },
            {**A14B, "in_channels": 36},
            {"z_dim": 16},
            ("wan2.2-i2v-a14b", 2, 1e-4, 0.9),
        ),
        (
            "wan22-ti2v-5b",
            {"_class_name": "WanPipeline", "expand_timesteps": True},
            {"num_attention_heads": 24, "attention_head_dim": 128, "num_layers": 30},
            {"z_dim": 48},
            ("wan2.2-ti2v-5b", 1, 2e-4, None),
        ),
    ],
)
def test_wan_families(tmp_path, name, index, transformer, vae, want):
    p = detect_profile(_wan_dir(tmp_path, name, index, transformer, vae, shift=3.0))
    assert (p.family, p.experts, p.lr, p.boundary_ratio) == want
    assert (p.batch, p.mixed_precision, p.grad_checkpointing, p.flow_shift) == (
        1,
        "bf16",
        True,
        3.0,
    )
    assert p.frames % 4 == 1 and p.height % 16 == 0 and p.width % 16 == 0


def test_the_flow_shift_is_the_schedulers_own(tmp_path):
    d = _wan_dir(tmp_path, "w", {"_class_name": "WanPipeline"}, A14B, {"z_dim": 16}, shift=5.0)
    assert detect_profile(d).flow_shift == 5.0


def test_cameo_tiny_and_cameos_own_models(tiny_pipeline_dir):
    shipped = detect_profile(tiny_model_dir())
    assert (shipped.family, shipped.height, shipped.width, shipped.frames, shipped.fps) == (
        "cameo-tiny",
        64,
        64,
        17,
        8,
    )
    assert (shipped.lr, shipped.batch, shipped.mixed_precision, shipped.flow_shift) == (
        2e-3,
        8,
        "no",
        2.0,
    )
    assert detect_profile(tiny_pipeline_dir).family == "cameo-tiny"  # MiniLM text encoder


def test_train_config_takes_what_the_flags_leave_to_the_base(tmp_path):
    from cameo.training import TrainConfig

    tiny = TrainConfig(data="x", trigger="mike")
    assert tiny.resolve(detect_profile(tiny_model_dir()), on_gpu=False) == {
        "height": 64,
        "width": 64,
        "batch": 8,
        "lr": 2e-3,
        "sigma_shift": 2.0,
        "grad_checkpointing": False,
        "mixed_precision": "no",
    }  # the built-in model trains as it always has
    wan = _wan_dir(tmp_path, "w", {"_class_name": "WanPipeline"}, A14B, {"z_dim": 16}, shift=3.0)
    cfg = TrainConfig(data="x", trigger="mike", lr=5e-5, height=320)
    filled = cfg.resolve(detect_profile(wan), on_gpu=True)
    assert "lr" not in filled and "height" not in filled  # every flag wins
    assert (cfg.lr, cfg.height, cfg.width, cfg.batch) == (5e-5, 320, 832, 1)
    assert (cfg.mixed_precision, cfg.grad_checkpointing, cfg.sigma_shift) == ("bf16", True, 3.0)
    cpu = TrainConfig(data="x", trigger="mike")
    cpu.resolve(detect_profile(wan), on_gpu=False)
    assert cpu.mixed_precision == "no"  # CPUs train in fp32


def test_train_help_names_the_bases_defaults(capsys):
    from cameo.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: None" not in text
    assert "the base's own" in text


def test_generation_takes_its_size_and_length_from_the_base(tmp_path):
    from cameo.generation import GenerateConfig

    tiny = GenerateConfig(prompt="mike").resolved()
    assert (tiny.frames, tiny.height, tiny.width, tiny.fps) == (17, 64, 64, 8)
    wan = _wan_dir(tmp_path, "w", {"_class_name": "WanPipeline"}, A14B, {"z_dim": 16}, shift=3.0)
    cfg = GenerateConfig(prompt="mike", base=str(wan), height=320).resolved()
    assert (cfg.frames, cfg.height, cfg.width, cfg.fps) == (81, 320, 832, 16)  # a flag wins
