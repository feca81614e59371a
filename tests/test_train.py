"""LoRA training end to end on a tiny pipeline: CLI smoke test, resume equality, refusals."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from cameo.cli import main
from cameo.data.world_folders import write_person_folder
from cameo.training import Trainer, TrainingInterrupted
from conftest import train_argv, train_config


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_person_folder(3, tmp_path_factory.mktemp("data") / "photos", 6)


def _cfg(photos, out, tiny, **kw):
    return train_config(photos, tiny, out, **{"checkpoint_every": 2, **kw})


def test_cli_train_then_generate(photos, tiny_pipeline_dir, tmp_path):
    out = tmp_path / "run"
    code = main(train_argv(photos, tiny_pipeline_dir, out))
    assert code == 0
    lora = out / "mike.safetensors"
    keys = list(load_file(str(lora)))
    assert keys and all(k.startswith("transformer.blocks.") for k in keys)
    assert {"to_q", "to_k", "to_v", "to_out"} <= {k.split(".")[4] for k in keys}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["lora"]["rank"] == 4 and cfg["trigger"] == "mike"
    assert "6 usable" in (out / "dataset_report.txt").read_text()
    clip = tmp_path / "clip.mp4"
    code = main(
        [
            "generate",
            "mike, speaking, in front of a blue wall",
            "--base",
            str(tiny_pipeline_dir),
            "--lora",
            f"{lora}:0.8",
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
    assert code == 0 and clip.stat().st_size > 0


@pytest.mark.parametrize("ema", [0.0, 0.5])
def test_resume_matches_an_uninterrupted_run(photos, tiny_pipeline_dir, tmp_path, monkeypatch, ema):
    """Also with --ema: the average is checkpointed and saved as the LoRA."""
    full = Trainer(_cfg(photos, tmp_path / "full", tiny_pipeline_dir, ema=ema)).train()
    # Stop after step index 2 (three steps done), as the web app's Cancel or Ctrl+C would.
    cut = Trainer(_cfg(photos, tmp_path / "cut", tiny_pipeline_dir, ema=ema))
    cut.events.on_step.append(lambda done, logs: cut.stop() if done == 3 else None)
    with pytest.raises(TrainingInterrupted):
        cut.train()
    assert cut.loop.step == 3
    resumed = Trainer(
        _cfg(photos, tmp_path / "cut", tiny_pipeline_dir, ema=ema), resume=True
    ).train()
    a, b = load_file(str(full)), load_file(str(resumed))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    la = [
        json.loads(x)["loss"] for x in (tmp_path / "full" / "losses.jsonl").read_text().splitlines()
    ]
    lb = [
        json.loads(x)["loss"] for x in (tmp_path / "cut" / "losses.jsonl").read_text().splitlines()
    ]
    assert len(la) == len(lb) == 4
    assert max(abs(x - y) for x, y in zip(la, lb, strict=True)) < 1e-5
    assert any(
        abs(x) > 0 for x in a["transformer.blocks.0.attn1.to_q.lora_B.weight"].flatten().tolist()
    )


def test_refusals_are_clear(photos, tiny_pipeline_dir, tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cameo.cli",
            "train",
            "--data",
            str(tmp_path / "none"),
            "--trigger",
            "mike",
            "--out",
            str(tmp_path / "o"),
            "--base",
            str(tiny_pipeline_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "not a folder" in r.stderr and "Traceback" not in r.stderr
    few = write_person_folder(4, tmp_path / "few", 2)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cameo.cli",
            "train",
            "--data",
            str(few),
            "--trigger",
            "mike",
            "--out",
            str(tmp_path / "o"),
            "--base",
            str(tiny_pipeline_dir),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "only 2 usable" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "cameo.cli",
            "train",
            "--data",
            str(photos),
            "--trigger",
            "two words",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2 and "one word" in r.stderr


def test_resume_without_checkpoint_fails_loudly(photos, tiny_pipeline_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        Trainer(_cfg(photos, tmp_path / "empty", tiny_pipeline_dir), resume=True).train()
