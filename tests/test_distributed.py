"""Two CPU processes (torchrun, gloo) give the same LoRA as one process with the same global batch."""

import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from cameo.data.world_folders import write_person_folder
from conftest import train_argv


def _meta(path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_match_one(tiny_pipeline_dir, tmp_path):
    photos = write_person_folder(6, tmp_path / "photos", 5)

    def argv(out):
        return train_argv(photos, tiny_pipeline_dir, out, steps=3, batch=4)

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [sys.executable, "-m", "cameo.cli", *argv(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            "-m",
            "cameo.cli",
            *argv(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (
        load_file(str(tmp_path / "one" / "mike.safetensors")),
        load_file(str(tmp_path / "two" / "mike.safetensors")),
    )
    assert a.keys() == b.keys()
    # the two processes trained as one run, not each alone on all the data
    assert _meta(tmp_path / "two" / "mike.safetensors")["cameo.processes"] == "2"
    assert _meta(tmp_path / "one" / "mike.safetensors")["cameo.processes"] == "1"
    moved = max(v.abs().max().item() for k, v in a.items() if "lora_B" in k)
    assert moved > 1e-4  # training changed B, so agreement is not trivial
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), (k, (a[k] - b[k]).abs().max())
