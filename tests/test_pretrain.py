"""`cameo pretrain` end to end on tiny settings: both stages, resume, and an exported pipeline
that stock diffusers loads."""

import json

from diffusers import WanPipeline

from cameo import checkpoint as ckpt
from cameo.models import TransformerConfig, VAEConfig
from cameo.pretrain import PretrainConfig, run_pretrain
from conftest import TINY_TRANSFORMER, TINY_VAE


def _cfg(out, **kw):
    base = dict(
        out=str(out),
        vae=VAEConfig(**TINY_VAE),
        transformer=TransformerConfig(**{**TINY_TRANSFORMER, "text_dim": 384}),
        vae_steps=2,
        vae_batch_images=2,
        vae_batch_clips=1,
        steps=3,
        batch=2,
        warmup=1,
        checkpoint_every=1,
        n_clips=2,
        n_images=2,
        n_pairs=1,
        size=32,
        frames=5,
    )
    return PretrainConfig(**{**base, **kw})


def test_pretrain_both_stages_export_and_resume(tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(out, steps=2)
    run_pretrain(cfg)
    assert ckpt.latest(out / "vae").name == "step-0000002"
    assert ckpt.latest(out / "transformer").name == "step-0000002"
    # Continue the transformer stage to 3 steps from its checkpoint.
    exported = run_pretrain(_cfg(out, steps=3), resume=True)
    assert ckpt.latest(out / "transformer").name == "step-0000003"
    pipe = WanPipeline.from_pretrained(exported)
    assert pipe.vae.config.latents_std != [1.0] * TINY_VAE["z_dim"]  # normalised by measured stats
    assert json.loads((exported / "model_index.json").read_text())["text_encoder"] == [
        "transformers",
        "BertModel",
    ]
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in log} == {"vae", "transformer"}


def test_pretrain_refuses_to_reuse_a_run_without_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    try:
        run_pretrain(_cfg(out))
    except FileExistsError as e:
        assert "--resume" in str(e)
    else:
        raise AssertionError("an existing run was silently reused")
