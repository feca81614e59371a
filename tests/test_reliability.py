"""Reliability: crashes, kills, NaNs, full disks and untrusted files lose nothing and run nothing.

Bounded here; more rounds with CAMEO_KILL_ROUNDS=20 CAMEO_FUZZ_EXAMPLES=5000 (see docs/reliability.md).
"""

import errno
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from cameo.cli import main
from cameo.data import DatasetError, scan_folder
from cameo.data.world_folders import write_person_folder
from cameo.formats import (
    FORMATS,
    ConversionError,
    convert_state_dict,
    layer_shapes,
    peft_metadata,
    to_canonical,
)
from cameo.lora_files import check_compatible, read_lora_file, write_safetensors
from cameo.models import load_pipeline
from cameo.training import Trainer
from cameo.training import checkpoint as ckpt
from conftest import train_argv, train_config

KILL_ROUNDS = int(os.environ.get("CAMEO_KILL_ROUNDS", "3"))
FUZZ = int(os.environ.get("CAMEO_FUZZ_EXAMPLES", "300"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_person_folder(5, tmp_path_factory.mktemp("rel") / "photos", 5)


def _args(photos, tiny, out, steps=6):
    return train_argv(photos, tiny, out, "--checkpoint-every", "1", steps=steps)


def _cfg(photos, tiny, out, **kw):
    return train_config(photos, tiny, out, **{"steps": 6, "checkpoint_every": 1, **kw})


def test_nan_halts_keeps_last_good_checkpoint_and_says_what_to_change(
    photos, tiny_pipeline_dir, tmp_path, monkeypatch, capsys
):
    import cameo.training.trainer as tr

    real = tr.training_loss
    calls = {"n": 0}

    def poisoned(model, batch, cfg):
        calls["n"] += 1
        loss = real(model, batch, cfg)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(tr, "training_loss", poisoned)
    out = tmp_path / "nan"
    code = main([*_args(photos, tiny_pipeline_dir, out)])
    assert code == 4
    err = capsys.readouterr().err
    assert "step 2" in err and "--lr" in err and "Traceback" not in err
    last = ckpt.latest(out / "checkpoints")
    assert last.name == "step-0000002"
    tensors, _, _ = ckpt.load(last)
    assert all(torch.isfinite(t).all() for t in tensors.values())
    assert not (out / "mike.safetensors").exists()


def test_disk_full_keeps_previous_checkpoint(tmp_path, monkeypatch):
    ckpt.save(tmp_path, 1, {"w": torch.ones(2)}, {"rng": ckpt.rng_state()})

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(ckpt.DiskFullError, match="previous checkpoint is intact"):
        ckpt.save(tmp_path, 2, {"w": torch.zeros(2)}, {"rng": ckpt.rng_state()})
    assert ckpt.latest(tmp_path).name == "step-0000001"
    assert torch.equal(ckpt.load(ckpt.latest(tmp_path))[0]["w"], torch.ones(2))
    assert not list(tmp_path.glob(".tmp-*"))


def _losses(path: Path) -> dict[int, float]:
    out = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        out[rec["step"]] = rec[
            "loss"
        ]  # a replayed step after resume overwrites: same value expected
    return out


def test_sigkill_at_random_points_and_mid_save_then_resume_matches(
    photos, tiny_pipeline_dir, tmp_path
):
    ref = Trainer(_cfg(photos, tiny_pipeline_dir, tmp_path / "ref")).train()
    out = tmp_path / "killed"
    env = {**os.environ, "CAMEO_CHECKPOINT_PAUSE": "0.4", "OMP_NUM_THREADS": "1"}
    rng = random.Random(0)
    kills = 0
    for round_ in range(KILL_ROUNDS):
        resume = ckpt.latest(out / "checkpoints") is not None
        cmd = [
            sys.executable,
            "-m",
            "cameo.cli",
            *_args(photos, tiny_pipeline_dir, out),
            *(["--resume"] if resume else []),
        ]
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.time() + 120
        if round_ == 0:  # the first kill lands in the middle of a save (not the first save)
            while (
                time.time() < deadline
                and proc.poll() is None
                and not (
                    ckpt.latest(out / "checkpoints") is not None
                    and list((out / "checkpoints").glob(".tmp-step-*"))
                )
            ):
                time.sleep(0.02)
        else:
            while (
                time.time() < deadline
                and proc.poll() is None
                and ckpt.latest(out / "checkpoints") is None
            ):
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.5))
        before = ckpt.latest(out / "checkpoints")
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        after = ckpt.latest(out / "checkpoints")
        # A kill never loses the checkpoint that was complete before it, and never leaves a
        # half-written one that looks complete.
        assert after is not None and (before is None or after.name >= before.name)
        ckpt.load(after)
    assert kills >= 1
    final = subprocess.run(
        [
            sys.executable,
            "-m",
            "cameo.cli",
            *_args(photos, tiny_pipeline_dir, out),
            "--resume",
            "--overwrite",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert final.returncode == 0, final.stderr[-2000:]
    a, b = load_file(str(ref)), load_file(str(out / "mike.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    la, lb = _losses(tmp_path / "ref" / "losses.jsonl"), _losses(out / "losses.jsonl")
    assert la.keys() == lb.keys() and max(abs(la[s] - lb[s]) for s in la) < 1e-5


def test_pickles_are_refused_and_wrong_models_named(tiny_pipeline_dir, tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"x": torch.zeros(1)}, evil)
    code = main(
        [
            "generate",
            "mike",
            "--base",
            str(tiny_pipeline_dir),
            "--lora",
            str(evil),
            "--out",
            str(tmp_path / "c.mp4"),
        ]
    )
    assert code == 2 and "pickle" in capsys.readouterr().err
    pipe = load_pipeline(tiny_pipeline_dir)
    wrong = tmp_path / "wrong.safetensors"
    save_file(
        {
            "transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 99),
            "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(16, 4),
        },
        str(wrong),
    )
    with pytest.raises(ValueError, match="made for another base model"):
        check_compatible(pipe.transformer, wrong)
    nowhere = tmp_path / "nowhere.safetensors"
    save_file(
        {
            "transformer.blocks.9.attn1.to_q.lora_A.weight": torch.zeros(4, 16),
            "transformer.blocks.9.attn1.to_q.lora_B.weight": torch.zeros(16, 4),
        },
        str(nowhere),
    )
    with pytest.raises(ValueError, match="matches no linear layer"):
        check_compatible(pipe.transformer, nowhere)
    good = {
        "transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 16),
        "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(16, 4),
    }
    hashed = tmp_path / "hashed.safetensors"
    save_file(
        good,
        str(hashed),
        metadata={"cameo.base_hash": "0123456789abcdef", "cameo.base": "elsewhere"},
    )
    with pytest.raises(ValueError, match="trained on base model elsewhere"):
        check_compatible(pipe.transformer, hashed, tiny_pipeline_dir)
    nan = tmp_path / "nan.safetensors"
    save_file(
        {
            **good,
            "transformer.blocks.0.attn1.to_q.lora_A.weight": torch.full((4, 16), float("nan")),
        },
        str(nan),
    )
    with pytest.raises(ValueError, match="non-finite"):
        read_lora_file(nan)


def test_generate_never_overwrites(tiny_pipeline_dir, tmp_path):
    out = tmp_path / "c.mp4"
    args = [
        "generate",
        "a man",
        "--base",
        str(tiny_pipeline_dir),
        "--out",
        str(out),
        "--frames",
        "1",
        "--height",
        "16",
        "--width",
        "16",
        "--steps",
        "1",
    ]
    assert main(args) == 0
    before = out.read_bytes()
    assert main(args) == 3
    assert out.read_bytes() == before
    assert main([*args, "--overwrite"]) == 0


_G = torch.Generator().manual_seed(0)
_VALID = {
    "transformer.blocks.0.attn1.to_q.lora_A.weight": torch.randn(4, 16, generator=_G),
    "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.randn(16, 4, generator=_G),
    "transformer.blocks.1.ffn.net.2.lora_A.weight": torch.randn(4, 32, generator=_G),
    "transformer.blocks.1.ffn.net.2.lora_B.weight": torch.randn(16, 4, generator=_G),
}
_REFUSED = {  # the reason each kind of bad file must be refused for (None: read or refused)
    "bytes": None,
    "flipped": None,
    "truncated": "not a readable safetensors file",
    "pickle": "not a readable safetensors file",
    "suffix": r"only \.safetensors LoRA files are loaded \(pickle files can run code\)",
    "nonfinite": "non-finite values in 1 tensors",
    "integer": "1 tensors are not floating point",
    "empty": "holds no tensors",
}
_REASONS = re.compile("|".join(r for r in _REFUSED.values() if r))


def _valid_lora(fmt: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    meta = {**peft_metadata(to_canonical(_VALID)[0]), "cameo.trigger": "mike"}
    shapes = layer_shapes({"num_attention_heads": 2, "attention_head_dim": 8, "ffn_dim": 32})
    sd, meta, _ = convert_state_dict(_VALID, fmt, meta, shapes)
    return sd, meta


def _bad_file(path: Path, kind: str, fmt: str, blob: bytes, draw) -> tuple[Path, bytes, bytes]:
    """Write a file of ``kind`` made from a valid LoRA in ``fmt``: (path, its bytes, valid bytes)."""
    sd, meta = _valid_lora(fmt)
    write_safetensors(path, sd, meta)
    valid = path.read_bytes()
    data = bytearray(valid)
    key = draw.draw(st.sampled_from(sorted(sd)))
    if kind == "bytes":
        data = bytearray(blob)
    elif kind == "flipped":
        at = st.integers(0, len(data) - 1)
        for i, value in draw.draw(st.lists(st.tuples(at, st.integers(0, 255)), max_size=8)):
            data[i] = value
    elif kind == "truncated":
        data = data[: draw.draw(st.integers(0, len(data) - 1))]
    elif kind == "pickle":  # a pickle under a safetensors name
        buf = io.BytesIO()
        torch.save(sd, buf)
        data = bytearray(buf.getvalue())
    elif kind == "suffix":
        path = path.rename(path.with_suffix(draw.draw(st.sampled_from([".pt", ".ckpt", ".bin"]))))
    elif kind in ("nonfinite", "integer", "empty"):
        if kind == "nonfinite":
            bad = sd[key].clone().flatten()
            bad[draw.draw(st.integers(0, bad.numel() - 1))] = draw.draw(
                st.sampled_from([float("nan"), float("inf"), float("-inf")])
            )
            sd = {**sd, key: bad.view(sd[key].shape)}
        elif kind == "integer":
            sd = {**sd, key: sd[key].to(draw.draw(st.sampled_from([torch.int32, torch.int8])))}
        else:
            sd = {}
        path.unlink()
        write_safetensors(path, sd, meta)
        data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data))
    return path, bytes(data), valid


@settings(max_examples=FUZZ, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kind=st.sampled_from(list(_REFUSED)),
    fmt=st.sampled_from(FORMATS),
    blob=st.binary(max_size=4096),
    draw=st.data(),
)
def test_fuzz_lora_files_are_read_whole_or_refused_cleanly(tmp_path_factory, kind, fmt, blob, draw):
    """Random bytes, a valid file with bytes changed or cut short, a pickle under a safetensors
    name, a file of another type, non-finite or integer weights, no tensors: each is refused with
    a ValueError that names the file and the reason (never another error, never by unpickling
    it), or, where the bytes may still form a valid file, read as float, finite tensors (the very
    same tensors and metadata while the bytes are the valid file's). What is read then converts,
    or is refused with a ConversionError."""
    path = tmp_path_factory.mktemp("fz") / "x.safetensors"
    path, data, valid = _bad_file(path, kind, fmt, blob, draw)
    want, _ = _valid_lora(fmt)
    unpickled = []

    def no_pickle(*args, **kwargs):
        unpickled.append(args)
        raise AssertionError("a LoRA file was unpickled")

    got = error = None
    with (
        mock.patch("torch.load", no_pickle),
        mock.patch("pickle.load", no_pickle),
        mock.patch("pickle.loads", no_pickle),
    ):
        try:
            got, got_meta = read_lora_file(path)
        except ValueError as e:
            error = e
    assert not unpickled
    if error is not None:
        assert type(error) is ValueError, f"{type(error).__name__}: {error}"
        assert str(error).startswith(f"{path}: "), str(error)
        assert re.search(_REFUSED[kind] or _REASONS, str(error)), str(error)
        assert data != valid or kind == "suffix", "the valid file was refused"
        return
    assert _REFUSED[kind] is None, f"the {kind} file was read"
    assert all(v.is_floating_point() and torch.isfinite(v).all() for v in got.values())
    if data == valid:
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
        assert got_meta == _valid_lora(fmt)[1]
    try:
        convert_state_dict(got, "comfyui", got_meta)
    except ConversionError as e:
        assert type(e) is ConversionError and str(e), f"{type(e).__name__}: {e}"


@settings(max_examples=max(20, FUZZ // 10), deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(
        st.tuples(
            st.sampled_from([".png", ".jpg", ".gif", ".webp", ".txt", ".mp4"]),
            st.binary(max_size=2048),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_fuzz_dataset_reader_only_clean_errors(tmp_path_factory, files):
    d = tmp_path_factory.mktemp("fd")
    for i, (ext, blob) in enumerate(files):
        (d / f"f{i}{ext}").write_bytes(blob)
    try:
        report = scan_folder(d, "mike", min_usable=0)
    except DatasetError:
        return
    media = [f for f in d.iterdir() if f.suffix != ".txt"]
    assert len(report.lines) == len(media)


def test_real_ctrl_c_saves_and_exits_130(photos, tiny_pipeline_dir, tmp_path):
    out = tmp_path / "sigint"
    env = {**os.environ, "CAMEO_CHECKPOINT_PAUSE": "0.3", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cameo.cli", *_args(photos, tiny_pipeline_dir, out, steps=40)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while (
        time.time() < deadline and proc.poll() is None and ckpt.latest(out / "checkpoints") is None
    ):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err[-2000:]
    assert "--resume" in err and "Traceback" not in err
    last = ckpt.latest(out / "checkpoints")
    assert last is not None and int(last.name.split("-")[1]) < 40
    ckpt.load(last)
