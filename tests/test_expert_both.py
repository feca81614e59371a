"""``--expert both``: Wan 2.2 A14B's two experts trained in one run, on a tiny random two-expert
pipeline (``wan22_dir``): each step routed by the pipeline's boundary, an exact resume, and the
files (one holding both adapters, and its halves) loaded by cameo and by stock diffusers."""

import pytest
import torch
from diffusers import WanPipeline
from safetensors.torch import load_file

from cameo.data.world_folders import write_person_folder
from cameo.diffusion import sample_sigmas
from cameo.generation import apply_loras
from cameo.lora import lora_parameters
from cameo.lora_files import convert_file, half_paths, read_metadata
from cameo.training import Trainer, TrainingInterrupted
from cameo.training.experts import TwoExperts, adapter_tensors, expert_sigmas, sigma_cdf
from cameo.training.objective import unwrap_model
from conftest import train_config
from test_real_wan import wan21_dir, wan22_dir  # noqa: F401  (fixtures)

SHIFT = 12.0  # puts about 70% of the sigmas above the fixture's boundary 0.875: both sides train
BOUNDARY_T = 875.0


def _cfg(photos, base, out, **over):
    settings = dict(height=64, width=64, sigma_shift=SHIFT, lr=1e-2, warmup=0, steps=6)
    return train_config(photos, base, out, **{**settings, **over})


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_person_folder(2, tmp_path_factory.mktemp("photos"), 5)


def _snapshot(model: TwoExperts) -> dict[str, torch.Tensor]:
    return {
        side: torch.cat([p.detach().flatten() for p in lora_parameters(m)]).clone()
        for side, m in zip(("high", "low"), model.experts, strict=True)
    }


@pytest.fixture(scope="module")
def run(photos, wan22_dir, tmp_path_factory):  # noqa: F811
    """Six steps of a both-experts run, watched: which expert each step called, with which
    timesteps, and which adapter the step changed."""
    out = tmp_path_factory.mktemp("both")
    trainer = Trainer(_cfg(photos, wan22_dir, out))
    steps: list[dict] = []
    calls: list[tuple[str, torch.Tensor]] = []
    inner = trainer._step

    def watched_step(step: int):
        model = unwrap_model(trainer.model)
        before, calls[:] = _snapshot(model), []
        logs = inner(step)
        steps.append({"before": before, "calls": list(calls)})
        return logs

    def after(done: int, logs) -> None:
        steps[done - 1]["after"] = _snapshot(unwrap_model(trainer.model))

    def setup_then_watch():
        Trainer.setup(trainer)
        for side, m in zip(("high", "low"), unwrap_model(trainer.model).experts, strict=True):
            m.register_forward_pre_hook(
                lambda _m, args, kwargs, side=side: calls.append((side, kwargs["timestep"])),
                with_kwargs=True,
            )

    trainer._step, trainer.setup = watched_step, setup_then_watch
    trainer.events.on_step.append(after)
    path = trainer.train()
    return trainer, path, steps


def test_each_step_trains_only_the_expert_its_timesteps_belong_to(run):
    trainer, _, steps = run
    sides = []
    for i, s in enumerate(steps):
        called = {side for side, _ in s["calls"]}
        assert len(called) == 1, f"step {i} called {called}"
        side = called.pop()
        for _, t in s["calls"]:  # WanPipeline's rule: t >= boundary -> transformer
            assert bool((t >= BOUNDARY_T).all()) if side == "high" else bool((t < BOUNDARY_T).all())
        idle = "low" if side == "high" else "high"
        assert not torch.equal(s["before"][side], s["after"][side]), f"step {i}: {side} unchanged"
        assert torch.equal(s["before"][idle], s["after"][idle]), f"step {i}: idle {idle} moved"
        sides.append(side)
    assert set(sides) == {"high", "low"}, sides  # over the run both experts train
    # the idle expert's AdamW state did not advance: each tensor stepped once per own step
    opt = trainer.opt.optimizer if hasattr(trainer.opt, "optimizer") else trainer.opt
    model = unwrap_model(trainer.model)
    for side, m in zip(("high", "low"), model.experts, strict=True):
        counts = {int(opt.state[p]["step"]) for p in lora_parameters(m)}
        assert counts == {sides.count(side)}, (side, counts)


def test_step_sigmas_follow_the_one_expert_distribution():
    """Drawing the side with its mass, then within it, gives the sigmas of one expert's draw."""
    high = torch.nn.Linear(1, 1)
    pair = TwoExperts(high, torch.nn.Linear(1, 1), 0.875)
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat([pair.sigmas_for_step(0, s, SHIFT)(1, g) for s in range(3000)])
    plain = sample_sigmas(20000, SHIFT, torch.Generator().manual_seed(1))
    q = torch.linspace(0.05, 0.95, 19)
    assert torch.allclose(drawn.quantile(q), plain.quantile(q), atol=0.02)
    share = (drawn >= 0.875).float().mean().item()
    assert abs(share - pair.high_share(SHIFT)) < 0.03
    assert abs(pair.high_share(SHIFT) - (plain >= 0.875).float().mean().item()) < 0.01
    low = expert_sigmas(4000, g, shift=SHIFT, lo=0.0, hi=0.875)
    assert (
        low.max() < 0.875 and abs(sigma_cdf(0.875, SHIFT) - (plain < 0.875).float().mean()) < 0.01
    )


def test_a_call_that_mixes_both_sides_is_refused():
    pair = TwoExperts(torch.nn.Identity(), torch.nn.Identity(), 0.875)
    with pytest.raises(ValueError, match="both sides"):
        pair(hidden_states=torch.zeros(2), timestep=torch.tensor([900.0, 100.0]))


def test_the_files_hold_both_adapters_and_their_halves(run):
    _, path, _ = run
    both = load_file(str(path))
    assert any(k.startswith("transformer_2.") for k in both)
    assert read_metadata(path)["cameo.expert"] == "both"
    assert list((path.parent / "previews").glob("*.mp4"))  # validated through the pipeline
    halves = half_paths(path)
    assert [p.name for p in halves.values()] == [
        "mike_high_noise.safetensors",
        "mike_low_noise.safetensors",
    ]
    for side, half in halves.items():
        tensors = load_file(str(half))
        assert read_metadata(half)["cameo.expert"] == side
        assert all(k.startswith("transformer.") for k in tensors)
        prefix = "transformer." if side == "high" else "transformer_2."
        for k, v in tensors.items():
            assert torch.equal(v, both[prefix + k.removeprefix("transformer.")])
        # each half changes its expert: B left zero would be the identity
        assert any(v.abs().sum() > 0 for k, v in tensors.items() if "lora_B" in k)


@pytest.mark.parametrize("fmt", ["comfyui", "kohya"])
def test_converting_the_combined_file_writes_its_halves(run, wan22_dir, tmp_path, fmt):  # noqa: F811
    _, path, _ = run
    cov = convert_file(path, tmp_path / "me.safetensors", fmt, base=wan22_dir)
    assert sorted(cov.files) == sorted(
        str(p) for p in half_paths(tmp_path / "me.safetensors").values()
    )
    back = convert_file(
        tmp_path / "me_low_noise.safetensors", tmp_path / "low.safetensors", "diffusers"
    )
    assert back.files == [str(tmp_path / "low.safetensors")]
    low = load_file(str(tmp_path / "low.safetensors"))
    original = load_file(str(half_paths(path)["low"]))
    assert low.keys() == original.keys()
    assert all(torch.equal(low[k], original[k]) for k in low)


def _clip(pipe) -> torch.Tensor:
    out = pipe(
        "mike, speaking",
        num_frames=5,
        height=32,
        width=32,
        num_inference_steps=2,
        generator=torch.Generator().manual_seed(0),
        output_type="latent",
    )
    return out.frames


def test_the_combined_file_generates_as_its_halves_in_stock_diffusers(run, wan22_dir):  # noqa: F811
    _, path, _ = run
    halves = half_paths(path)
    stock = WanPipeline.from_pretrained(wan22_dir)
    plain = _clip(stock)
    stock.load_lora_weights(str(halves["high"]), adapter_name="high")
    stock.load_lora_weights(str(halves["low"]), adapter_name="low", load_into_transformer_2=True)
    with_halves = _clip(stock)
    assert not torch.allclose(with_halves, plain, atol=1e-4)  # the halves change the clip
    combined = WanPipeline.from_pretrained(wan22_dir)
    apply_loras(combined, [str(path)])  # cameo's loader: each half into its transformer
    assert torch.allclose(_clip(combined), with_halves, atol=1e-6)
    # and each half matters: only the high one differs from both
    high_only = WanPipeline.from_pretrained(wan22_dir)
    high_only.load_lora_weights(str(halves["high"]))
    assert not torch.allclose(_clip(high_only), with_halves, atol=1e-4)
    # --fuse writes both halves into their experts' weights and leaves no adapter behind
    fused = WanPipeline.from_pretrained(wan22_dir)
    apply_loras(fused, [str(path)], fuse=True)
    assert not fused.get_list_adapters()
    assert torch.allclose(_clip(fused), with_halves, atol=1e-5)


def test_resume_continues_both_experts_exactly(photos, wan22_dir, tmp_path):  # noqa: F811
    full = Trainer(_cfg(photos, wan22_dir, tmp_path / "full", steps=4)).train()
    cut = Trainer(_cfg(photos, wan22_dir, tmp_path / "cut", steps=4))
    cut.events.on_step.append(lambda done, logs: cut.stop() if done == 2 else None)
    with pytest.raises(TrainingInterrupted):
        cut.train()
    resumed = Trainer(_cfg(photos, wan22_dir, tmp_path / "cut", steps=4), resume=True).train()
    for a_path, b_path in [
        (full, resumed),
        *zip(half_paths(full).values(), half_paths(resumed).values(), strict=True),
    ]:
        a, b = load_file(str(a_path)), load_file(str(b_path))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    tensors = load_file(str(full))
    for prefix in ("transformer.", "transformer_2."):  # both experts trained in these 4 steps
        assert any(
            v.abs().sum() > 0 for k, v in tensors.items() if k.startswith(prefix) and "lora_B" in k
        )


def test_init_from_takes_both_halves_and_refuses_one(run, photos, wan22_dir, tmp_path):  # noqa: F811
    _, path, _ = run
    trainer = Trainer(_cfg(photos, wan22_dir, tmp_path / "again", init_from=str(path)))
    trainer.setup()
    started = adapter_tensors(unwrap_model(trainer.model))
    saved = load_file(str(path))
    assert started.keys() == saved.keys()
    assert all(torch.equal(started[k], saved[k]) for k in saved)
    half = str(half_paths(path)["high"])
    with pytest.raises(ValueError, match="holds both experts"):
        Trainer(_cfg(photos, wan22_dir, tmp_path / "half", init_from=half)).setup()
