"""Training options that change the result: TOML config, prior preservation, EMA, early stop,
TensorBoard logs; and `cameo sweep`."""

import json

import pytest
import torch
from safetensors.torch import load_file

from cameo.cli import main
from cameo.data.world_folders import write_person_folder
from cameo.diffusion import flow_matching_loss, min_snr_weights
from cameo.training import Trainer
from conftest import train_config


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_person_folder(8, tmp_path_factory.mktemp("opt") / "photos", 5)


def _tiny_cfg(**kw):
    """A TrainConfig with what it leaves to the base filled from cameo-tiny's profile, for
    the library functions that take a resolved config (batches, cache, loss)."""
    from cameo.training import TrainConfig
    from cameo.training.config import resolve_from_base

    cfg = TrainConfig.from_options(**kw)
    resolve_from_base(cfg, on_gpu=False)
    return cfg


def _run(photos, tiny, out, **kw):
    return load_file(str(Trainer(train_config(photos, tiny, out, **kw)).train()))


def test_toml_config_with_flag_overrides(photos, tiny_pipeline_dir, tmp_path):
    toml = tmp_path / "mike.toml"
    toml.write_text(
        f'[train]\ndata = "{photos}"\ntrigger = "mike"\nrank = 4\nsteps = 2\nbatch = 2\n'
        f'base = "{tiny_pipeline_dir}"\nvalidate-every = 0\nlog_with = "none"\n'
    )
    out = tmp_path / "run"
    assert main(["train", "--config", str(toml), "--out", str(out), "--steps", "3"]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["lora"]["rank"] == 4 and cfg["steps"] == 3  # from the file, and the flag wins
    (tmp_path / "bad.toml").write_text("[train]\nrnak = 4\n")
    assert (
        main(
            [
                "train",
                "--config",
                str(tmp_path / "bad.toml"),
                "--data",
                str(photos),
                "--trigger",
                "mike",
            ]
        )
        == 2
    )


def test_prior_preservation_strangers_and_ema_change_the_result(
    photos, tiny_pipeline_dir, tmp_path
):
    plain = _run(photos, tiny_pipeline_dir, tmp_path / "plain", prior_preservation=0.0)
    prior = _run(
        photos, tiny_pipeline_dir, tmp_path / "prior", prior_preservation=1.0, prior_strangers=0.0
    )
    ema = _run(photos, tiny_pipeline_dir, tmp_path / "ema", prior_preservation=0.0, ema=0.5)
    snr = _run(photos, tiny_pipeline_dir, tmp_path / "snr", prior_preservation=0.0, min_snr_gamma=5)
    others = _run(
        photos, tiny_pipeline_dir, tmp_path / "others", prior_preservation=1.0, prior_strangers=1.0
    )
    key = "transformer.blocks.0.attn1.to_q.lora_B.weight"
    assert plain[key].abs().max() > 0
    assert not torch.allclose(plain[key], prior[key])
    # strangers change only the prior's text, which this tiny random model barely reads; the
    # runs are bitwise deterministic, so any difference is theirs
    assert not torch.equal(prior[key], others[key])
    assert not torch.allclose(plain[key], ema[key])
    assert not torch.allclose(plain[key], snr[key])


def test_min_snr_weights_the_velocity_loss_by_noise_level():
    sigmas = torch.tensor([0.5, 0.1, 0.9])
    torch.testing.assert_close(min_snr_weights(sigmas, 5.0), torch.tensor([1.0, 0.2, 0.04]))
    assert torch.equal(min_snr_weights(sigmas, 0.0), torch.ones(3))

    def model(hidden_states, timestep, encoder_hidden_states, return_dict):
        return (0.5 * hidden_states,)  # any prediction: the weighting is per sample

    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 2, 1, 4, 4, generator=g), torch.randn(3, 2, 1, 4, 4, generator=g)
    text = torch.zeros(3, 1, 8)
    plain = flow_matching_loss(model, x0, text, sigmas, noise)
    weighted = flow_matching_loss(model, x0, text, sigmas, noise, min_snr_gamma=5.0)
    torch.testing.assert_close(weighted, plain * torch.tensor([1.0, 0.2, 0.04]))


def test_tensorboard_logs_are_written(photos, tiny_pipeline_dir, tmp_path):
    _run(photos, tiny_pipeline_dir, tmp_path / "tb", log_with="tensorboard", steps=2)
    assert list((tmp_path / "tb" / "logs").rglob("events.out.tfevents*"))


def test_early_stop_and_best_checkpoint(photos, tiny_pipeline_dir, tmp_path, monkeypatch):
    import cameo.training.trainer as tr

    scores = iter([0.5, 0.7, 0.6, 0.6, 0.6, 0.6])

    class FakeValidator:
        def __init__(self, trainer):
            pass

        def run(self, step):
            return {"identity_normalised": next(scores), "prompt_fidelity": 1.0}

    monkeypatch.setattr(tr, "Validator", FakeValidator)
    out = tmp_path / "es"
    cfg = train_config(photos, tiny_pipeline_dir, out, steps=6, validate_every=1, early_stop=2)
    Trainer(cfg).train()
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["best_step"] == 2  # the 0.7 validation
    steps = [json.loads(x)["step"] for x in (out / "losses.jsonl").read_text().splitlines()]
    assert max(steps) == 3  # stopped after two validations without gain
    assert (out / "mike-last.safetensors").exists()


def test_sweep_writes_grid(photos, tiny_pipeline_dir, tmp_path):
    from cameo.generation.sweep import run_sweep

    lora = Trainer(train_config(photos, tiny_pipeline_dir, tmp_path / "l", steps=2)).train()
    report = run_sweep(lora, [0.0, 1.0], tmp_path / "sw", base=str(tiny_pipeline_dir))
    import imageio.v3 as iio

    grid = iio.imread(tmp_path / "sw" / "grid.gif", index=None)
    assert grid.shape[2] == 3 * (64 * 2 + 2)  # two 64-px clips and a 2-px gap, GIF enlarged 3x
    assert [r["scale"] for r in report["rows"]] == [0.0, 1.0]


def _toy_cache():
    """A cache of two captions whose embeddings are constants, so a batch shows which prompt
    each sample got: captions 1, 2; class prompts 11, 12; empty 0; trigger 7 (class: 17)."""
    t = lambda v: torch.full((1, 3, 4), float(v))  # noqa: E731 (one embedding per value)
    cache = {
        "groups": [{"latents": torch.randn(6, 2, 1, 4, 4), "caption_ids": torch.arange(6) % 2}],
        "text": torch.cat([t(1), t(2)]),
        "class_text": torch.cat([t(11), t(12)]),
        "empty": t(0)[0],
        "trigger": t(7)[0],
        "class_trigger": t(17)[0],
    }
    return t, cache


def test_trigger_only_captions_some_samples_with_the_trigger_alone():
    """--trigger-only swaps the caption (and the class prompt) of a share of samples for the
    trigger alone (and the class word), and draws nothing else differently."""
    import torch

    from cameo.training import TrainConfig
    from cameo.training.objective import make_batch

    _, cache = _toy_cache()
    kw = dict(trigger="mike", batch=64, prior_preservation=0.5, caption_dropout=0.0)
    plain = make_batch(cache, _tiny_cfg(**kw), step=3)
    mixed = make_batch(cache, _tiny_cfg(**kw, trigger_only=0.5), step=3)
    for k in ("x0", "noise", "sigmas"):
        assert torch.equal(plain[k], mixed[k])
    assert not (plain["text"] == 7).any()
    alone = (mixed["text"] == 7).all(dim=(1, 2))
    assert 10 < int(alone.sum()) < 54
    assert (mixed["class_text"][alone] == 17).all() and (mixed["class_text"][~alone] > 10).all()
    assert (mixed["class_text"][~alone] < 13).all()
    with pytest.raises(ValueError, match="--trigger-only must be in"):
        TrainConfig(data="x", trigger_only=1.5, trigger="mike").validate()


def test_prior_strangers_swap_some_class_prompts_for_other_people():
    """--prior-strangers replaces a share of the class prompts with the same caption naming one
    of the base model's people instead; the person's own samples are drawn as before."""
    from cameo.training import TrainConfig
    from cameo.training.objective import make_batch

    t, cache = _toy_cache()
    kw = dict(trigger="mike", batch=64, prior_preservation=0.5, caption_dropout=0.0)
    plain = make_batch(cache, _tiny_cfg(**kw, prior_strangers=0.0), step=3)
    # caption c, stranger j -> 100 + 10 c + j
    cache["stranger_text"] = torch.stack(
        [torch.cat([t(100 + 10 * c + j) for j in range(4)]) for c in range(2)]
    )
    mixed = make_batch(cache, _tiny_cfg(**kw, prior_strangers=0.5), step=3)
    for k in ("x0", "noise", "sigmas", "text"):
        assert torch.equal(plain[k], mixed[k])
    other = (mixed["class_text"] >= 100).all(dim=(1, 2))
    assert 10 < int(other.sum()) < 54
    assert torch.equal(mixed["class_text"][~other], plain["class_text"][~other])
    # a stranger in the sample's own caption (plain class prompt 11 or 12 -> caption 0 or 1)
    caption = plain["class_text"][other][:, 0, 0] - 11
    stranger = mixed["class_text"][other][:, 0, 0] - 100 - 10 * caption
    assert ((stranger >= 0) & (stranger < 4)).all() and len(stranger.unique()) > 1
    with pytest.raises(ValueError, match="--prior-strangers must be in"):
        TrainConfig(data="x", trigger="mike", prior_strangers=1.5).validate()


def test_the_cache_holds_each_caption_with_strangers_in_place_of_the_person(
    photos, tiny_pipeline_dir
):
    from cameo.data import scan_folder
    from cameo.models import load_pipeline
    from cameo.training.cache import STRANGERS_PER_CAPTION, build_cache

    pipe, report = load_pipeline(str(tiny_pipeline_dir)), scan_folder(photos, "mike")
    cfg = _tiny_cfg(data=str(photos), trigger="mike")
    cache = build_cache(pipe, report, cfg)
    n, t, d = cache["class_text"].shape
    assert cache["stranger_text"].shape == (n, STRANGERS_PER_CAPTION, t, d)
    differs = (cache["stranger_text"] - cache["class_text"][:, None]).abs().amax(dim=(2, 3))
    assert (differs > 0).all()  # every variant names someone, not the class word
    off = build_cache(pipe, report, _tiny_cfg(data=str(photos), trigger="mike", prior_strangers=0))
    assert "stranger_text" not in off and torch.equal(off["class_text"], cache["class_text"])


def test_still_clips_add_each_photo_as_a_still_clip(photos, tiny_pipeline_dir):
    """--still-clips 5: besides each photo (one latent frame), the same photo repeated for five
    frames (two latent frames, the second of which photos never fill), with the same caption."""
    from cameo.data import scan_folder
    from cameo.models import load_pipeline
    from cameo.training import TrainConfig
    from cameo.training.cache import build_cache

    pipe, report = load_pipeline(str(tiny_pipeline_dir)), scan_folder(photos, "mike")
    cfg = _tiny_cfg(data=str(photos), trigger="mike", still_clips=5, prior_strangers=0)
    photo, still = build_cache(pipe, report, cfg)["groups"]
    assert photo["latents"].shape[2] == 1 and still["latents"].shape[2] == 2
    assert torch.equal(photo["caption_ids"], still["caption_ids"])
    # causal VAE: the first latent frame of the still clip is the photo's own latent
    assert torch.allclose(still["latents"][:, :, :1], photo["latents"], atol=1e-5)
    for bad in (3, 6):
        with pytest.raises(ValueError, match="--still-clips must be 0 or 4k"):
            TrainConfig(data="x", trigger="mike", still_clips=bad).validate()


def test_strangers_are_the_base_models_people_described():
    from cameo.training.cache import class_prompt
    from cameo.world import strangers

    who = strangers(8, seed=0)
    assert who == strangers(8, seed=0) and who != strangers(8, seed=1)
    assert all(w.startswith(("a ", "an ")) and "mike" not in w for w in who)
    assert len(set(who)) > 4
    prompt = class_prompt("mike, speaking, in front of a red wall", "mike", who[0])
    assert prompt == f"{who[0]}, speaking, in front of a red wall"


def test_sigma_shift_moves_the_training_sigmas_and_nothing_else():
    """--sigma-shift reshapes the drawn sigmas (a higher shift: noisier on average), keeps
    their order and every other draw of the batch, and is checked up front."""
    import torch

    from cameo.training import TrainConfig
    from cameo.training.objective import make_batch

    cache = {
        "groups": [{"latents": torch.randn(6, 2, 1, 4, 4), "caption_ids": torch.arange(6) % 2}],
        "text": torch.randn(2, 3, 4),
        "empty": torch.zeros(3, 4),
    }
    kw = dict(trigger="mike", batch=256, prior_preservation=0.0)
    base, high = (make_batch(cache, _tiny_cfg(**kw, sigma_shift=s), step=5) for s in (2.0, 6.0))
    for k in ("x0", "noise", "text"):
        assert torch.equal(base[k], high[k])
    assert high["sigmas"].mean() > base["sigmas"].mean() + 0.05
    assert torch.equal(base["sigmas"].argsort(), high["sigmas"].argsort())
    with pytest.raises(ValueError, match="--sigma-shift must be in"):
        TrainConfig(data="x", trigger="mike", sigma_shift=0.0).validate()


def test_prior_preservation_in_one_forward_equals_two(tiny_pipeline_dir):
    """training_loss batches the caption and class-prompt halves into one call: the loss and
    the gradients must equal those of two separate calls."""
    from cameo.diffusion import flow_matching_loss, noisy_latents
    from cameo.lora import LoraSpec, adapters_disabled, add_lora, lora_parameters
    from cameo.models import load_pipeline
    from cameo.training.objective import training_loss

    model = load_pipeline(tiny_pipeline_dir).transformer
    add_lora(model, LoraSpec(rank=4, alpha=4), "default")
    params = lora_parameters(model)
    with torch.no_grad():  # B = 0 would make the adapter a no-op in the comparison
        for p in params:
            p.normal_(0, 0.05)
    g = torch.Generator().manual_seed(0)
    c, f, h, w = model.config.in_channels, 2, 8, 8
    x0 = torch.randn(3, c, f, h, w, generator=g)
    text_dim = model.config.text_dim
    batch = {
        "x0": x0,
        "noise": torch.randn(x0.shape, generator=g),
        "sigmas": torch.rand(3, generator=g),
        "text": torch.randn(3, 7, text_dim, generator=g),
        "class_text": torch.randn(3, 7, text_dim, generator=g),
    }
    cfg = _tiny_cfg(prior_preservation=0.7)
    one = training_loss(model, batch, cfg)
    grads_one = torch.autograd.grad(one, params)
    xt = noisy_latents(x0, batch["noise"], batch["sigmas"])
    with torch.no_grad(), adapters_disabled(model):
        prior = model(
            hidden_states=xt,
            timestep=batch["sigmas"] * 1000.0,
            encoder_hidden_states=batch["class_text"],
            return_dict=False,
        )[0]
    args = (batch["sigmas"], batch["noise"])
    two = (
        flow_matching_loss(model, x0, batch["text"], *args).mean()
        + 0.7
        * flow_matching_loss(model, x0, batch["class_text"], *args, target_velocity=prior).mean()
    )
    grads_two = torch.autograd.grad(two, params)
    torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_one, grads_two, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert torch.stack([a.abs().max() for a in grads_one]).max() > 0


def test_generated_prior_trains_on_the_base_models_own_samples(photos, tiny_pipeline_dir, tmp_path):
    """--prior-source generated: one base sample per class prompt, in the transformer's latent
    space, made before the adapter exists; it changes the result against the photo prior."""
    import cameo.training.cache as tr

    made = {}
    real = tr.base_samples

    def spy(pipe, prompts, *args):
        made["adapters"] = any("lora_" in n for n, _ in pipe.transformer.named_parameters())
        made["prompts"] = prompts
        made["latents"] = real(pipe, prompts, *args)
        return made["latents"]

    tr.base_samples = spy
    try:
        gen = _run(photos, tiny_pipeline_dir, tmp_path / "gen", prior_source="generated")
    finally:
        tr.base_samples = real
    photo = _run(photos, tiny_pipeline_dir, tmp_path / "photo", prior_source="photos")
    z = made["latents"]
    assert not made["adapters"]
    assert z.shape[0] == len(made["prompts"]) == 5 and z.shape[2] == 1 and torch.isfinite(z).all()
    assert all("mike" not in p and "a person" in p for p in made["prompts"])
    assert 0.3 < float(z.std()) < 3  # normalised latents, not pixels
    key = "transformer.blocks.0.attn1.to_q.lora_B.weight"
    assert not torch.allclose(gen[key], photo[key])


def test_resume_takes_the_adapters_settings_from_its_run(tmp_path, capsys):
    """`cameo train --resume` with a shorter command line keeps the run's rank, targets and
    schedule (its config.json): the defaults would not load into its checkpoints. What the
    command line gives wins; how fast it runs is the invocation's own."""
    from dataclasses import asdict

    from cameo.cli import build_parser, dataclass_from_args, restore_run_settings
    from cameo.training import PER_INVOCATION, TrainConfig

    out = tmp_path / "mike"
    out.mkdir()
    run = TrainConfig.from_options(
        data="photos", name="mike", out=str(out), rank=4, steps=7, threads=2, targets="to_q,to_v"
    )
    saved = asdict(run)
    flat = {**{k: v for k, v in saved.items() if k != "lora"}, **saved["lora"]}
    argv = ["train", "--data", "photos", "--name", "mike", "--out", str(out), "--resume"]
    # config.json as written now (the LoRA spec nested) and as older runs wrote it (flat)
    for written in (saved, flat):
        (out / "config.json").write_text(json.dumps(written))
        args = build_parser().parse_args([*argv, "--steps", "9", "--alpha", "2"])
        cfg = dataclass_from_args(TrainConfig, args)
        assert cfg.lora.rank != 4  # the default, before the run's settings are restored
        restore_run_settings(cfg, args, PER_INVOCATION)
        assert (cfg.lora.rank, cfg.steps, cfg.threads) == (4, 9, TrainConfig().threads)
        assert (cfg.lora.targets, cfg.lora.alpha) == ("to_q,to_v", 2.0)  # the flag wins
        assert "rank" in capsys.readouterr().err


def test_resume_of_a_run_saved_before_a_setting_existed_trains_as_it_did(tmp_path):
    """A run whose config.json predates --prior-strangers resumes without strangers (as it was
    trained), not with the new default; given on the command line, the flag still wins."""
    from dataclasses import asdict

    from cameo.cli import build_parser, dataclass_from_args, restore_run_settings
    from cameo.training import PER_INVOCATION, TrainConfig

    out = tmp_path / "old"
    out.mkdir()
    saved = asdict(TrainConfig(data="photos", name="mike", out=str(out)))
    del saved["prior_strangers"]
    (out / "config.json").write_text(json.dumps(saved))
    argv = ["train", "--data", "photos", "--name", "mike", "--out", str(out), "--resume"]
    for extra, expected in (([], 0.0), (["--prior-strangers", "0.5"], 0.5)):
        args = build_parser().parse_args([*argv, *extra])
        cfg = dataclass_from_args(TrainConfig, args)
        assert cfg.prior_strangers == (expected if extra else 1.0)
        restore_run_settings(cfg, args, PER_INVOCATION)
        assert cfg.prior_strangers == expected
