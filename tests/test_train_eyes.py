"""The eyes' training recipe on tiny nets: its command line, and a run stopped and resumed from
its checkpoint that ends exactly where an unbroken run does."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train_eyes as recipe
from cameo.metrics.nets import EYES_DIR
from cameo.metrics.train_eyes import EyesConfig
from cameo.training import TrainingInterrupted
from cameo.training import checkpoint as ckpt
from cameo.training.loop import Events

EYES_IDENTITY = EYES_DIR / "identity.safetensors"
TINY = dict(
    identities=4,
    photos_per_identity=2,
    wide_photos=2,
    steps=4,
    ids_per_batch=4,
    per_id=2,
    probe_batch=4,
    wide_batch=2,
    encoder_width=8,
    probe_width=8,
    checkpoint_every=2,
)
VALIDATION = {  # validate_eyes renders hundreds of people; its arithmetic is tested elsewhere
    "people": 1,
    "identification_top1": 1.0,
    "verification_auc": 1.0,
    "hat_accuracy_single": 0.5,
    "yaw_mae_rad": 0.1,
    "mouth_mae": 0.1,
    "speaking_threshold": 0.2,
}


@pytest.fixture(autouse=True)
def _no_validation(monkeypatch):
    monkeypatch.setattr(recipe, "validate_eyes", lambda enc, probe, counter=None: dict(VALIDATION))


def _cfg(tmp_path, name: str, **kw) -> EyesConfig:
    out = tmp_path / name
    settings = {**TINY, "bank": str(tmp_path / "bank.npz"), "checkpoint": str(out / "checkpoints")}
    return EyesConfig(out=str(out), **{**settings, **kw})


def _argv(cfg: EyesConfig) -> list[str]:
    defaults = EyesConfig()
    return [
        arg
        for k, v in vars(cfg).items()
        if v != getattr(defaults, k)
        for arg in (f"--{k.replace('_', '-')}", str(v))
    ]


def _newest(cfg: EyesConfig) -> tuple[str, dict[str, torch.Tensor], dict]:
    path = ckpt.latest(Path(cfg.checkpoint))
    assert path is not None, cfg.checkpoint
    tensors, _, optim = ckpt.load(path)
    return path.name, tensors, optim


def test_resumed_run_equals_an_unbroken_one(tmp_path):
    whole = _cfg(tmp_path, "whole")
    assert recipe.main(_argv(whole)) == 0

    cut_cfg = _cfg(tmp_path, "cut")
    cut = recipe.EyesTraining(
        cut_cfg, Events(on_step=[lambda done, logs: cut.stop() if done == 2 else None])
    )
    cut.setup()
    start = {k: v.clone() for k, v in cut._tensors().items()}
    with pytest.raises(TrainingInterrupted, match="step 2"):
        cut.train()
    name, halfway, _ = _newest(cut_cfg)
    assert name == "step-0000002"
    # Both nets moved in the first two steps, so a resume that restarted from the initial
    # weights (or lost the optimiser or the batch generator) could not end where `whole` does.
    for net in ("encoder.", "probe."):
        assert any(not torch.equal(start[k], halfway[k]) for k in start if k.startswith(net)), net

    card = recipe.train_eyes(cut_cfg)
    assert card["history"][-1]["config"]["steps"] == 4
    name_a, a, optim_a = _newest(whole)
    name_b, b, optim_b = _newest(cut_cfg)
    assert name_a == name_b == "step-0000004"
    assert a.keys() == b.keys() == start.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(halfway[k], b[k]) for k in b)  # the resumed run trained on
    moments = [s["exp_avg"] for s in optim_a["state"].values()]
    assert all(
        torch.equal(m, s["exp_avg"])
        for m, s in zip(moments, optim_b["state"].values(), strict=True)
    )
    for f in ("identity.safetensors", "probes.safetensors"):
        fa, fb = load_file(str(tmp_path / "whole" / f)), load_file(str(tmp_path / "cut" / f))
        assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)

    readme = (tmp_path / "whole" / "README.md").read_text()
    assert "probes.safetensors: `python recipes/train_eyes.py --out" in readme
    assert "4 steps" in readme
    with pytest.raises(ValueError, match="other settings"):  # other settings do not resume
        recipe.train_eyes(_cfg(tmp_path, "cut", lr=1e-3))


def test_probes_alone_keep_the_identity_encoder(tmp_path):
    cfg = _cfg(tmp_path, "probes", only="probes", steps=2, checkpoint="")
    out = tmp_path / "probes"
    out.mkdir()
    (out / "identity.safetensors").write_bytes(EYES_IDENTITY.read_bytes())
    card = recipe.train_eyes(cfg)
    assert (out / "identity.safetensors").read_bytes() == EYES_IDENTITY.read_bytes()
    assert load_file(str(out / "probes.safetensors")) and card["config"]["only"] == "probes"
    assert not (out / "checkpoints").exists()
