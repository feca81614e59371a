"""``--device`` and ``--dtype``: how "auto" resolves, the flags of every generating command,
and a generation in bf16 on a tiny Wan directory with a real UMT5 text encoder."""

import json

import pytest
import torch

from cameo.cli import build_parser, main
from cameo.generation import GenerateConfig
from cameo.models import load_pipeline, tiny_model_dir
from cameo.models.memory import resolve_device, resolve_dtype
from test_real_wan import wan21_dir  # noqa: F401  (fixture)


def test_auto_device_is_cuda_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError):
        resolve_device("nonsense")


def test_auto_dtype_is_bf16_for_real_wan_on_a_gpu_and_fp32_elsewhere(wan21_dir):  # noqa: F811
    gpu = torch.device("cuda")  # not used: only the rule is checked, no CUDA needed
    assert resolve_dtype("auto", gpu, wan21_dir) == torch.bfloat16
    assert resolve_dtype("auto", gpu, tiny_model_dir()) == torch.float32
    assert resolve_dtype("auto", "cpu", wan21_dir) == torch.float32
    assert resolve_dtype("fp16", "cpu", wan21_dir) == torch.float16
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int8", "cpu")


def test_the_built_in_model_loads_as_before_on_the_cpu():
    pipe = load_pipeline()  # the library default: CPU, and fp32 for cameo-tiny
    assert pipe.device.type == "cpu" and pipe.transformer.dtype == torch.float32


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "p"],
        ["sweep", "--lora", "x.safetensors"],
        ["demo"],
        ["ui"],
    ],
)
def test_every_generating_command_takes_device_and_dtype(argv):
    args = build_parser().parse_args([*argv, "--device", "cpu", "--dtype", "bf16"])
    assert (args.device, args.dtype) == ("cpu", "bf16")
    defaults = build_parser().parse_args(argv)
    assert (defaults.device, defaults.dtype) == ("auto", "auto")


def test_generate_config_refuses_bad_placements():
    for bad in ({"dtype": "int4"}, {"offload": "disk"}, {"device": "tpu:9"}):
        with pytest.raises(ValueError):
            GenerateConfig(prompt="p", **bad).validate()


def test_generate_runs_in_bf16_on_the_cpu_on_a_umt5_wan_dir(wan21_dir, tmp_path):  # noqa: F811
    clip = tmp_path / "c.mp4"
    argv = ["generate", "mike, speaking", "--base", str(wan21_dir), "--out", str(clip)]
    argv += ["--frames", "5", "--height", "32", "--width", "32", "--steps", "2"]
    assert main([*argv, "--device", "cpu", "--dtype", "bf16"]) == 0
    assert clip.stat().st_size > 0
    meta = json.loads(clip.with_suffix(".json").read_text())
    assert (meta["device"], meta["dtype"]) == ("cpu", "bf16")


def test_the_web_app_renders_where_it_was_told(tmp_path, monkeypatch):
    from cameo.ui.app import CameoApp

    app = CameoApp(tmp_path / "work", device="cpu", dtype="fp32")
    lora = tmp_path / "mike.safetensors"
    lora.write_bytes(b"")
    monkeypatch.setattr(app, "trained_lora", lambda session: lora)
    sid, _ = app.start_session()
    cfg = app._generate_config(app.session(sid), "mike, speaking", 1.0, 0, 2, None, 1.0, "linear")
    assert (cfg.device, cfg.dtype) == ("cpu", "fp32")


@pytest.mark.slow
def test_the_prepared_gpu_script_dry_run_measures_every_variant(tmp_path):
    """benchmarks/gpu_performance.py --tiny: the GPU session's measurements, same code, on the
    CPU with 2-block models of the real classes (about 20 s)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "p.json"
    cmd = [
        sys.executable,
        str(root / "benchmarks" / "gpu_performance.py"),
        "--tiny",
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=600)
    rows = json.loads(out.read_text())["rows"]
    names = [r["variant"] for r in rows]
    for who in ("cameo", "stock"):
        for label in ("bf16", "fp8", "offload block"):
            assert f"Wan2.1-T2V-1.3B {who} {label}" in names
    assert "Wan2.1-T2V-14B cameo fp8 + offload block" in names
    assert not [r for r in rows if "error" in r]
    assert all(r["lora_updated"] for r in rows if "s_per_step" in r)
    assert rows[-1]["s_per_clip"] > 0
