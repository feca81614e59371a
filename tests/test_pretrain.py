"""`cameo pretrain` end to end on tiny settings: both stages, resume, and an exported pipeline
that stock diffusers loads."""

import json
import shutil

import pytest
import torch
from diffusers import WanPipeline
from safetensors.torch import load_file

from cameo import models
from cameo.cli import EXIT_REFUSED, main
from cameo.models import TransformerConfig, VAEConfig
from cameo.pretrain import (
    PretrainConfig,
    check_denoiser,
    famous_sample_weights,
    load_redraw,
    run_pretrain,
    stage_minutes,
    train_transformer,
    train_vae,
    warm_start,
)
from cameo.pretrain import stage as stage_module
from cameo.pretrain.data import _transformer_batch
from cameo.pretrain.decoder import _grown_decoder, _latest_decoder
from cameo.pretrain.transformer import _pipeline_for
from cameo.pretrain.transformer_init import _transformer_weights_file
from cameo.training import checkpoint as ckpt
from cameo.world import FAMOUS
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

    # Export with its model card; a second export never replaces a model silently.
    dest = tmp_path / "shipped"
    assert main(["model", "export", "--run", str(out), "--to", str(dest)]) == 0
    card = (dest / "README.md").read_text()
    assert "step-" not in card and "'transformer': 3" in card
    (dest / "README.md").write_text("kept")
    assert main(["model", "export", "--run", str(out), "--to", str(dest)]) == EXIT_REFUSED
    assert (dest / "README.md").read_text() == "kept"
    assert main(["model", "export", "--run", str(out), "--to", str(dest), "--overwrite"]) == 0
    assert (dest / "README.md").read_text() == card


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


def test_architecture_file_sets_the_shapes_and_resume_keeps_them(tmp_path):
    arch = tmp_path / "arch.toml"
    arch.write_text(
        "[vae]\nbase_dim = 8\nz_dim = 4\ndim_mult = [1, 2, 4]\ntemperal_downsample = [true, true]\n"
        "[transformer]\nnum_attention_heads = 2\nattention_head_dim = 8\nnum_layers = 2\n"
        "ffn_dim = 32\nin_channels = 4\nfreq_dim = 16\n"
    )
    out = tmp_path / "run"
    # The tiny defaults of _cfg are replaced by the file's shapes: a 4x VAE (two downsamples).
    exported = run_pretrain(_cfg(out, architecture=str(arch), vae=VAEConfig()))
    pipe = WanPipeline.from_pretrained(exported)
    assert pipe.vae.config.scale_factor_spatial == 4
    assert pipe.vae_scale_factor_spatial == 4
    saved = json.loads((out / "config.json").read_text())
    assert saved["vae"]["dim_mult"] == [1, 2, 4]
    # Resuming without the file uses the run's own shapes (not the defaults), so the
    # checkpoints load; the transformer continues from step 3 to 4.
    run_pretrain(_cfg(out, steps=4, vae=VAEConfig(), transformer=TransformerConfig()), resume=True)
    assert ckpt.latest(out / "transformer").name == "step-0000004"
    # A file that contradicts the run is refused before anything is loaded.
    other = tmp_path / "other.toml"
    other.write_text("[vae]\nbase_dim = 8\nz_dim = 4\n[transformer]\nin_channels = 4\n")
    with pytest.raises(ValueError, match="differs from the run"):
        run_pretrain(_cfg(out, architecture=str(other)), resume=True)


def test_architecture_errors_are_plain_messages(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[vae]\nzdim = 3\n")
    with pytest.raises(ValueError, match="unknown \\[vae\\] settings zdim"):
        run_pretrain(_cfg(tmp_path / "a", architecture=str(bad)))
    with pytest.raises(ValueError, match="no such file"):
        run_pretrain(_cfg(tmp_path / "b", architecture=str(tmp_path / "missing.toml")))
    mismatch = _cfg(tmp_path / "c", transformer=TransformerConfig(in_channels=16))
    with pytest.raises(ValueError, match="must equal the VAE's z_dim"):
        mismatch.validate()


def test_decoder_stage_before_the_transformer_goes_into_its_export(tmp_path):
    """VAE, then the decoder fine-tuned on full clips (no export yet), then the transformer:
    the exported VAE has the fine-tuned decoder and the unchanged encoder."""
    out = tmp_path / "run"
    assert run_pretrain(_cfg(out, stage="vae")) is None
    assert run_pretrain(_cfg(out, stage="decoder", decoder_steps=2), resume=True) is None
    tuned = load_file(str(ckpt.latest(out / "decoder") / "model.safetensors"))
    first = load_file(str(ckpt.latest(out / "vae") / "model.safetensors"))
    key = next(k for k in tuned if k.startswith("decoder.") and k.endswith("weight"))
    assert not torch.equal(tuned[key], first[key])
    exported = run_pretrain(_cfg(out, stage="transformer", steps=1), resume=True)
    vae = WanPipeline.from_pretrained(exported).vae
    sd = vae.state_dict()
    torch.testing.assert_close(sd[key].float(), tuned[key].half().float())
    enc = next(k for k in first if k.startswith("encoder.") and k.endswith("weight"))
    torch.testing.assert_close(sd[enc].float(), first[enc].half().float())


def test_widened_decoder_stage_grows_from_the_narrow_one_and_is_exported(tmp_path, monkeypatch):
    """--decoder-width: the run's latest decoder grows wider in its own stage folder, resumes
    there (the CLI keeps the width), and the exported VAE (stock diffusers) has the wide decoder
    over the same encoder; before it has trained, exports keep the narrow one."""
    out = tmp_path / "run"
    assert run_pretrain(_cfg(out, stage="vae")) is None
    assert run_pretrain(_cfg(out, stage="decoder", decoder_steps=1), resume=True) is None
    narrow = load_file(str(ckpt.latest(out / "decoder") / "model.safetensors"))
    wide = dict(stage="decoder", decoder_width=16)
    untrained = _latest_decoder(_cfg(out, **wide), out, models.VAEConfig(**TINY_VAE).build())
    assert untrained.config.decoder_base_dim is None  # no wide checkpoint yet: the narrow one
    grown_from = []
    real_widen = models.widen_decoder
    monkeypatch.setattr(
        models,
        "widen_decoder",
        lambda vae, *a, **k: grown_from.append(vae) or real_widen(vae, *a, **k),
    )
    assert run_pretrain(_cfg(out, decoder_steps=1, **wide), resume=True) is None
    torch.testing.assert_close(
        grown_from[0].state_dict()["decoder.conv_out.weight"], narrow["decoder.conv_out.weight"]
    )
    assert ckpt.latest(out / "decoder").name == "step-0000001"  # the narrow one, untouched
    resumed = ["pretrain", "--out", str(out), "--resume", "--stage", "decoder", "--threads", "1"]
    assert main([*resumed, "--decoder-steps", "2"]) == 0  # the width comes from config.json
    assert ckpt.latest(out / "decoder-w16").name == "step-0000002"
    tuned = load_file(str(ckpt.latest(out / "decoder-w16") / "model.safetensors"))
    assert (
        tuned["decoder.conv_out.weight"].shape[1] == 2 * narrow["decoder.conv_out.weight"].shape[1]
    )
    _grown_decoder(_cfg(out, stage="decoder", decoder_width=24), out)
    assert models.decoder_width(grown_from[-1]) == 16  # a second widening grows the wide one

    exported = run_pretrain(_cfg(out, stage="transformer", steps=1, decoder_width=16), resume=True)
    vae = WanPipeline.from_pretrained(exported).vae
    assert vae.config.decoder_base_dim == 16
    sd, first = vae.state_dict(), load_file(str(ckpt.latest(out / "vae") / "model.safetensors"))
    for key in ("decoder.conv_out.weight", "decoder.mid_block.attentions.0.to_qkv.weight"):
        torch.testing.assert_close(sd[key].float(), tuned[key].half().float())
    enc = next(k for k in first if k.startswith("encoder.") and k.endswith("weight"))
    torch.testing.assert_close(sd[enc].float(), first[enc].half().float())
    dest = tmp_path / "shipped"
    assert main(["model", "export", "--run", str(out), "--to", str(dest)]) == 0
    card = (dest / "README.md").read_text()
    assert "'decoder-w16': 2" in card and "base width 16" in card
    with pytest.raises(ValueError, match="narrower"):
        run_pretrain(_cfg(out, stage="decoder", decoder_width=4), resume=True)


def test_init_transformer_warm_starts_from_another_pipeline(tmp_path):
    """--init-transformer loads another run's exported transformer before the first step (with
    lr 0 the weights stay exactly the loaded ones); a differently shaped one is refused."""
    first = run_pretrain(_cfg(tmp_path / "a", steps=1))
    theirs = load_file(str(first / "transformer" / "diffusion_pytorch_model.safetensors"))
    out = tmp_path / "b"
    assert run_pretrain(_cfg(out, stage="vae")) is None
    run_pretrain(
        _cfg(out, stage="transformer", steps=1, lr=0.0, init_transformer=str(first)), resume=True
    )
    ours = load_file(str(ckpt.latest(out / "transformer") / "model.safetensors"))
    record = json.loads((out / "transformer_init.json").read_text())
    assert (
        record["file"].endswith("diffusion_pytorch_model.safetensors")
        and len(record["sha256"]) == 64
    )
    assert ours.keys() == theirs.keys()
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k].float())
    # The same stage from scratch (another seed) starts elsewhere: the check above can fail.
    cold = tmp_path / "c"
    run_pretrain(_cfg(cold, steps=1, lr=0.0, seed=1))
    other = load_file(str(ckpt.latest(cold / "transformer") / "model.safetensors"))
    assert any(not torch.equal(other[k], theirs[k].float()) for k in theirs)
    assert _transformer_weights_file("cameo-tiny").is_file()  # the shipped model
    narrow = {**TINY_TRANSFORMER, "text_dim": 384, "ffn_dim": TINY_TRANSFORMER["ffn_dim"] // 2}
    with pytest.raises(ValueError, match="does not match this architecture"):
        run_pretrain(
            _cfg(
                tmp_path / "d", transformer=TransformerConfig(**narrow), init_transformer=str(first)
            )
        )
    # A VAE with twice the latent channels: every layer but the latent input and output ones
    # comes from the source; those two keep their fresh initialisation.
    io = {**TINY_TRANSFORMER, "text_dim": 384}
    io["in_channels"] = 2 * io["in_channels"]
    model = TransformerConfig(**io).build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = warm_start(model, str(first))
    fresh = {"patch_embedding.weight", "proj_out.weight", "proj_out.bias"}
    assert set(record["fresh"]) == fresh
    for k, v in model.state_dict().items():
        if k in fresh:
            assert torch.equal(v, before[k]) and v.shape != theirs[k].shape
        else:
            torch.testing.assert_close(v, theirs[k].float())


def test_cli_resume_keeps_the_runs_own_schedule(tmp_path, capsys):
    """A resume that names only the stage and the budget continues the run's own step count,
    data size and batches (config.json), not the defaults; a flag it gives still wins."""
    arch = tmp_path / "arch.toml"
    arch.write_text(
        "[vae]\nbase_dim = 8\nz_dim = 4\n[transformer]\nnum_attention_heads = 2\n"
        "attention_head_dim = 8\nnum_layers = 2\nffn_dim = 32\nin_channels = 4\nfreq_dim = 16\n"
    )
    out = tmp_path / "run"
    first = ["pretrain", "--out", str(out), "--architecture", str(arch), "--stage", "vae"]
    first += ["--vae-steps", "2", "--vae-batch-images", "2", "--vae-batch-clips", "1"]
    first += ["--size", "32", "--frames", "5", "--checkpoint-every", "1", "--seed", "3"]
    assert main([*first, "--lr", "1e-3"]) == 0
    again = ["pretrain", "--out", str(out), "--resume", "--stage", "decoder"]
    # --lr 5e-4 is the default value, and given it must still win over the run's 1e-3.
    assert main([*again, "--decoder-steps", "1", "--threads", "1", "--lr", "5e-4"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["lr"] == 5e-4
    assert (saved["vae_steps"], saved["size"], saved["frames"], saved["seed"]) == (2, 32, 5, 3)
    assert (saved["vae_batch_images"], saved["stage"], saved["decoder_steps"]) == (2, "decoder", 1)
    assert saved["vae"]["base_dim"] == 8
    assert "vae_steps" in capsys.readouterr().err  # the restored settings are named
    assert ckpt.latest(out / "decoder").name == "step-0000001"


def test_stage_minutes_leaves_out_pauses_between_invocations(tmp_path):
    # Two invocations of the transformer stage a day apart: 5 + 3 logged minutes, not a day.
    log = [("vae", 0.0), ("vae", 120.0)]
    log += [("transformer", 1000.0 + 60.0 * i) for i in range(6)]
    log += [("transformer", 90_000.0 + 60.0 * i) for i in range(4)]
    (tmp_path / "log.jsonl").write_text(
        "".join(json.dumps({"stage": s, "step": i, "t": t}) + "\n" for i, (s, t) in enumerate(log))
    )
    assert stage_minutes(tmp_path) == {"vae": 2.0, "transformer": 8.0}


def test_famous_weight_draws_named_people_more_often():
    captions = ["", f"{FAMOUS[3]}, speaking, in front of a red wall", "a man with short hair"]
    ids = torch.tensor([1] * 10 + [2] * 90)  # 10% of the group names a famous person

    def cache():
        group = {"latents": torch.arange(100.0).view(100, 1, 1, 1, 1), "caption_ids": ids.clone()}
        return {"groups": {"image": group}, "text": torch.zeros(3, 2, 4), "empty_id": 0}

    def famous_share(c, cfg) -> float:
        drawn = torch.cat([_transformer_batch(c, cfg, s)[1].flatten() for s in range(50)])
        return float((drawn < 10).float().mean())

    cfg = PretrainConfig(batch=32, caption_dropout=0.0)
    plain, weighted = cache(), cache()
    famous_sample_weights(weighted, captions, 9.0)
    assert weighted["groups"]["image"]["weights"][:10].eq(9).all()
    assert weighted["groups"]["image"]["weights"][10:].eq(1).all()
    assert famous_share(plain, cfg) < 0.2  # about 0.10
    assert 0.4 < famous_share(weighted, cfg) < 0.6  # 90 / (90 + 90) = 0.5
    # the same step draws the same batch: a resume replays nothing
    assert torch.equal(
        _transformer_batch(weighted, cfg, 7)[1], _transformer_batch(weighted, cfg, 7)[1]
    )
    with pytest.raises(ValueError, match="famous-weight"):
        PretrainConfig(famous_weight=0).validate()


def test_denoised_decoder_stage_refines_the_decoder_on_redrawn_latents(tmp_path, capsys):
    """--decoder-denoiser: the redraw changes latents (and keeps them at clean share 1), the stage
    refines the decoder stage's checkpoint in decoder-denoised/ and the export takes it over the
    same encoder; a denoiser whose encoder is another run's, or a missing one, is refused."""
    out = tmp_path / "run"
    assert run_pretrain(_cfg(out, stage="vae")) is None
    assert run_pretrain(_cfg(out, stage="decoder", decoder_steps=1), resume=True) is None
    exported = run_pretrain(_cfg(out, stage="transformer", steps=1), resume=True)
    z = torch.randn(2, TINY_VAE["z_dim"], 2, 4, 4)  # (B, C, F', h, w)
    captions = ["a man with short red hair", "a woman with glasses"]
    redrawn = load_redraw(
        _cfg(out, decoder_denoiser=str(exported), decoder_clean_share=0.0), torch.device("cpu")
    )(z, captions, torch.Generator().manual_seed(0))
    assert redrawn.shape == z.shape and (redrawn - z).abs().mean() > 1e-3
    kept = load_redraw(
        _cfg(out, decoder_denoiser=str(exported), decoder_clean_share=1.0), torch.device("cpu")
    )(z, captions, torch.Generator().manual_seed(0))
    assert torch.equal(kept, z)

    before = load_file(str(ckpt.latest(out / "decoder") / "model.safetensors"))
    resumed = ["pretrain", "--out", str(out), "--resume", "--stage", "decoder", "--threads", "1"]
    assert main([*resumed, "--decoder-steps", "2", "--decoder-denoiser", str(exported)]) == 0
    assert ckpt.latest(out / "decoder-denoised").name == "step-0000002"
    assert ckpt.latest(out / "decoder").name == "step-0000001"  # the source, untouched
    tuned = load_file(str(ckpt.latest(out / "decoder-denoised") / "model.safetensors"))
    key = "decoder.conv_out.weight"
    assert not torch.equal(tuned[key], before[key])
    # the stage rewrote the run's exported VAE: its decoder, over the same encoder
    sd = WanPipeline.from_pretrained(exported).vae.state_dict()
    torch.testing.assert_close(sd[key].float(), tuned[key].half().float())
    enc = next(k for k in before if k.startswith("encoder.") and k.endswith("weight"))
    torch.testing.assert_close(sd[enc].float(), before[enc].half().float())

    other = run_pretrain(_cfg(tmp_path / "other", seed=1, steps=1))
    with pytest.raises(ValueError, match="encoder is not this run's"):
        check_denoiser(_cfg(out, stage="decoder", decoder_denoiser=str(other)), out)
    with pytest.raises(ValueError, match="--decoder-denoiser"):
        _cfg(out, decoder_denoiser=str(tmp_path / "nowhere")).validate()
    config = (out / "config.json").read_text()
    capsys.readouterr()
    assert main([*resumed, "--decoder-denoiser", str(other), "--decoder-steps", "3"]) != 0
    assert "encoder is not this run's" in capsys.readouterr().err
    assert (out / "config.json").read_text() == config  # refused before anything was written
    # per invocation: a resume without the flag trains (and exports) the plain decoder stage
    assert json.loads(config)["decoder_denoiser"] == str(exported)
    assert main([*resumed, "--decoder-steps", "2"]) == 0
    assert ckpt.latest(out / "decoder").name == "step-0000002"
    assert ckpt.latest(out / "decoder-denoised").name == "step-0000002"
    # a decoder stage stopped by its time budget keeps a checkpoint and leaves the export alone
    weights = exported / "vae" / "diffusion_pytorch_model.safetensors"
    shipped = weights.read_bytes()
    stopped = _cfg(out, stage="decoder", decoder_steps=5, max_minutes=1e-9)
    assert run_pretrain(stopped, resume=True) is None
    assert ckpt.latest(out / "decoder").name == "step-0000003"
    assert weights.read_bytes() == shipped


def test_warm_start_grows_narrower_feed_forwards_without_changing_the_output(tmp_path):
    """A transformer with twice the feed-forward width warm-starts from a narrower one and
    predicts exactly what it predicted; one training step then moves the new units."""
    first = run_pretrain(_cfg(tmp_path / "a", steps=1))
    narrow = WanPipeline.from_pretrained(first).transformer.float().eval()
    wide_cfg = {**TINY_TRANSFORMER, "text_dim": 384, "ffn_dim": TINY_TRANSFORMER["ffn_dim"] * 2}
    wide = TransformerConfig(**wide_cfg).build().eval()
    fresh = {k: v.clone() for k, v in wide.state_dict().items()}
    record = warm_start(wide, str(first))
    assert record["grown"] and all(".ffn." in k for k in record["grown"])
    x = torch.randn(2, TINY_VAE["z_dim"], 2, 4, 4)  # (B, C, F, h, w)
    text, t = torch.randn(2, 7, 384), torch.tensor([300.0, 800.0])
    with torch.no_grad():
        before = narrow(hidden_states=x, timestep=t, encoder_hidden_states=text).sample
        after = wide(hidden_states=x, timestep=t, encoder_hidden_states=text).sample
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    up = "blocks.0.ffn.net.0.proj.weight"
    n = narrow.config.ffn_dim
    assert torch.equal(wide.state_dict()[up][n:], fresh[up][n:])  # new units: fresh, not zero
    assert not torch.equal(fresh[up][n:], torch.zeros_like(fresh[up][n:]))

    # A run whose VAE stage is done takes the wider transformer (--architecture) before its
    # transformer stage starts; trained on, the new units' down-projection leaves zero.
    out = tmp_path / "b"
    assert run_pretrain(_cfg(out, stage="vae")) is None
    arch = tmp_path / "wide.toml"
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in wide_cfg.items())
    vae = "\n".join(f"{k} = {json.dumps(v)}" for k, v in TINY_VAE.items())
    arch.write_text(f"[vae]\n{vae}\n[transformer]\n{table}\n")
    grow = ["pretrain", "--out", str(out), "--resume", "--stage", "transformer", "--threads", "1"]
    grow += ["--steps", "1", "--architecture", str(arch), "--init-transformer", str(first)]
    assert main(grow) == 0
    trained = load_file(str(ckpt.latest(out / "transformer") / "model.safetensors"))
    assert trained["blocks.0.ffn.net.2.weight"].shape[1] == 2 * n
    assert trained["blocks.0.ffn.net.2.weight"][:, n:].abs().sum() > 0
    assert json.loads((out / "transformer_init.json").read_text())["grown"]
    dest = tmp_path / "shipped"
    assert main(["model", "export", "--run", str(out), "--to", str(dest)]) == 0
    assert f"grown to {2 * n} hidden units" in (dest / "README.md").read_text()
    # Once the transformer stage has a checkpoint, its shape is the run's.
    narrow_arch = tmp_path / "narrow.toml"
    narrow_arch.write_text(arch.read_text().replace(f"ffn_dim = {2 * n}", f"ffn_dim = {n}"))
    assert main([*grow[:8], "--steps", "2", "--architecture", str(narrow_arch)]) != 0
    assert main([*grow[:8], "--steps", "2", "--architecture", str(arch)]) == 0


def _weights(run, stage):
    return load_file(str(ckpt.latest(run / stage) / "model.safetensors"))


def _losses(run):
    """The run's logged values, without their times: (stage, step, loss, psnr...)."""
    records = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "t"} for r in records]


def _assert_resumed_equals_straight(stopped, straight, name, initial):
    """Same checkpoint step, same weights to 1e-6, far from the initial weights."""
    ours, theirs = _weights(stopped, name), _weights(straight, name)
    assert ckpt.latest(stopped / name).name == ckpt.latest(straight / name).name
    assert max((ours[k] - initial[k]).abs().max() for k in ours) > 1e-3
    for k in theirs:
        torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=1e-6)


def test_resumed_stages_equal_an_uninterrupted_run(tmp_path):
    """A VAE stage and a transformer stage stopped after one step (by the time budget, which
    saves a checkpoint) and resumed take the steps an uninterrupted stage takes: the same
    weights and the same logged losses. Both stages move far from where they started, and a
    resume that loses the optimiser state ends elsewhere, so the comparison can fail."""
    cpu, steps = torch.device("cpu"), dict(vae_steps=4, steps=4, warmup=2, checkpoint_every=100)
    straight, stopped, lost = tmp_path / "straight", tmp_path / "stopped", tmp_path / "lost"
    for run in (straight, stopped):
        run.mkdir()

    vae = train_vae(_cfg(straight, **steps), straight, cpu)
    assert train_vae(_cfg(stopped, max_minutes=1e-9, **steps), stopped, cpu) is None
    assert ckpt.latest(stopped / "vae").name == "step-0000001"  # the budget's checkpoint
    shutil.copytree(stopped, lost)
    (ckpt.latest(lost / "vae") / "optim.pt").unlink()
    assert train_vae(_cfg(stopped, **steps), stopped, cpu) is not None
    torch.manual_seed(0)
    _assert_resumed_equals_straight(
        stopped, straight, "vae", VAEConfig(**TINY_VAE).build().state_dict()
    )

    vae.register_to_config(latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    pipe = _pipeline_for(vae)
    train_transformer(_cfg(straight, **steps), straight, vae, pipe, cpu)
    shutil.copy(straight / "cache.pt", stopped / "cache.pt")
    budget = _cfg(stopped, max_minutes=1e-9, **steps)
    assert train_transformer(budget, stopped, vae, pipe, cpu) is None
    assert ckpt.latest(stopped / "transformer").name == "step-0000001"
    assert train_transformer(_cfg(stopped, **steps), stopped, vae, pipe, cpu) is not None
    torch.manual_seed(1)
    initial = _cfg(straight).transformer.build().state_dict()
    _assert_resumed_equals_straight(stopped, straight, "transformer", initial)

    assert _losses(stopped) == _losses(straight)
    assert all(r["loss"] > 0 for r in _losses(straight))
    assert [(r["stage"], r["step"]) for r in _losses(straight)] == [
        ("vae", 0),
        ("vae", 3),
        ("transformer", 0),
        ("transformer", 3),
    ]
    assert train_vae(_cfg(lost, **steps), lost, cpu) is not None
    ours, theirs = _weights(lost, "vae"), _weights(straight, "vae")
    assert max((ours[k] - theirs[k]).abs().max() for k in theirs) > 1e-4


def test_stage_minutes_fix_the_step_count_and_a_resume_keeps_it(tmp_path, monkeypatch):
    """--vae-minutes: after timing a few steps, the stage's step count is cut to what fits (here
    nothing more: one step past the timing) and written to vae_plan.json; the stage ends there
    with a checkpoint, and a resume asking for more steps keeps the plan."""
    monkeypatch.setattr(stage_module, "TIMED_STEPS", 2)
    timed, cpu = stage_module.SKIPPED_STEPS + 2, torch.device("cpu")
    small = dict(vae_batch_images=1, vae_batch_clips=0)
    budget = _cfg(tmp_path, vae_steps=20, vae_minutes=1e-9, **small)
    assert train_vae(budget, tmp_path, cpu) is not None
    plan = json.loads((tmp_path / "vae_plan.json").read_text())
    assert plan["steps"] == timed + 1 and plan["minutes"] == 1e-9
    assert ckpt.latest(tmp_path / "vae").name == f"step-{timed + 1:07d}"
    assert _losses(tmp_path)[-1]["step"] == timed  # the last step is logged
    assert train_vae(_cfg(tmp_path, vae_steps=30, **small), tmp_path, cpu) is not None
    assert ckpt.latest(tmp_path / "vae").name == f"step-{timed + 1:07d}"


def test_adversarial_decoder_stage_trains_a_discriminator_and_ships_without_it(tmp_path):
    """--decoder-adversarial: the stage refines the decoder stage's checkpoint in
    decoder-adversarial/, the discriminator learns from the first step and judges the decoder
    only from --decoder-adversarial-start on, a resume continues both exactly, and the export
    keeps the VAE's own keys and encoder."""
    out = tmp_path / "run"
    assert run_pretrain(_cfg(out, stage="vae")) is None
    assert run_pretrain(_cfg(out, stage="decoder", decoder_steps=1), resume=True) is None
    exported = run_pretrain(_cfg(out, stage="transformer", steps=1), resume=True)
    before = load_file(str(ckpt.latest(out / "decoder") / "model.safetensors"))
    adv = dict(stage="decoder", decoder_adversarial=0.5, decoder_adversarial_start=1,
               decoder_batch=1, decoder_lr=1e-3)  # fmt: skip
    assert run_pretrain(_cfg(out, decoder_steps=1, **adv), resume=True) is not None
    one = load_file(str(ckpt.latest(out / "decoder-adversarial") / "model.safetensors"))
    assert any(k.startswith("discriminator.") for k in one)
    assert run_pretrain(_cfg(out, decoder_steps=3, **adv), resume=True) is not None
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in logged if r.get("stage") == "decoder-adversarial"]
    assert "generator" not in steps[0] and "generator" in steps[-1]  # judged after the start
    assert all("discriminator" in r for r in steps)
    tuned = load_file(str(ckpt.latest(out / "decoder-adversarial") / "model.safetensors"))
    key = "decoder.conv_out.weight"
    assert not torch.equal(tuned[key], before[key])
    sd = WanPipeline.from_pretrained(exported).vae.state_dict()
    assert not any(k.startswith("discriminator.") for k in sd)
    torch.testing.assert_close(sd[key].float(), tuned[key].half().float())
    enc = next(k for k in before if k.startswith("encoder.") and k.endswith("weight"))
    torch.testing.assert_close(sd[enc].float(), before[enc].half().float())
    # three steps straight give what one step and a resume to three gave
    straight = tmp_path / "straight"
    shutil.copytree(out, straight, ignore=shutil.ignore_patterns("decoder-adversarial"))
    assert run_pretrain(_cfg(straight, decoder_steps=3, **adv), resume=True) is not None
    again = load_file(str(ckpt.latest(straight / "decoder-adversarial") / "model.safetensors"))
    for k in (key, next(k for k in again if k.startswith("discriminator."))):
        torch.testing.assert_close(again[k], tuned[k])


def test_transformer_ema_is_exported_and_resumes_exactly(tmp_path):
    """--ema: the exported transformer is the moving average (not the last weights, which the
    checkpoint keeps), and a stage stopped and resumed averages as an uninterrupted one."""
    stage = dict(stage="transformer", steps=4, lr=1e-2, ema=0.5, schedule="constant")
    for run in ("whole", "split"):
        assert run_pretrain(_cfg(tmp_path / run, stage="vae")) is None
    whole = run_pretrain(_cfg(tmp_path / "whole", **stage), resume=True)
    out = tmp_path / "split"
    assert run_pretrain(_cfg(out, **stage, max_minutes=1e-9), resume=True) is None
    stopped = ckpt.latest(out / "transformer")
    assert stopped is not None and stopped.name != "step-0000004"  # stopped early, saved
    split = run_pretrain(_cfg(out, **stage), resume=True)
    name = "transformer/diffusion_pytorch_model.safetensors"
    a, b = load_file(str(whole / name)), load_file(str(split / name))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    saved = load_file(str(ckpt.latest(tmp_path / "whole" / "transformer") / "model.safetensors"))
    names = [
        n
        for n, _ in TransformerConfig(**{**TINY_TRANSFORMER, "text_dim": 384})
        .build()
        .named_parameters()
    ]
    moved = 0
    for i, n in enumerate(names):
        average = saved[f"ema::{i}"].to(a[n].dtype)
        torch.testing.assert_close(a[n], average, rtol=0, atol=0)  # exported = the average
        moved += not torch.equal(saved[n].to(a[n].dtype), a[n])
    assert moved > len(names) // 2  # ... which differs from the last weights


def test_schedule_and_ema_settings_are_checked():
    with pytest.raises(ValueError, match="--schedule"):
        _cfg("x", schedule="linear").validate()
    with pytest.raises(ValueError, match="--ema"):
        _cfg("x", ema=1.0).validate()
