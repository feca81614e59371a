"""Composition foundations: orthogonal slots, resize, merges that load strictly and reproduce
the adapted output, and regional masks that touch only their region."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from cameo.cli import main
from cameo.compose import (
    check_slots,
    delta,
    load_modules,
    merge,
    region_token_mask,
    regional,
    regional_prompts,
    regional_text_mask,
    resize,
    set_orthogonal_down,
)
from cameo.generation import GenerateConfig, apply_loras, generate_frames
from cameo.lora import LoraSpec, adapter_state_dict, add_lora
from cameo.lora_files import save_lora_file
from cameo.models import encode_prompts, fast, load_pipeline

GEN = dict(frames=5, height=32, width=64, steps=2, guidance=3.0, seed=0)


def _lora(tiny, path, seed, trigger="mike", slot=None):
    pipe = load_pipeline(tiny)
    add_lora(pipe.transformer, LoraSpec(rank=4, alpha=4))
    if slot is not None:
        set_orthogonal_down(pipe.transformer, slot, 4, seed=7)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in pipe.transformer.named_parameters():
            if "lora_B" in n or ("lora_A" in n and slot is None):
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    meta = {
        "trigger": trigger,
        **({"orthogonal_slot": str(slot), "orthogonal_seed": "7"} if slot is not None else {}),
    }
    return save_lora_file(
        path, adapter_state_dict(pipe.transformer), LoraSpec(rank=4, alpha=4), meta
    )


def test_orthogonal_slots_are_orthogonal_and_shared_slots_refused(tiny_pipeline_dir, tmp_path):
    a = load_modules(_lora(tiny_pipeline_dir, tmp_path / "a.safetensors", 1, slot=0))[0]
    b = load_modules(_lora(tiny_pipeline_dir, tmp_path / "b.safetensors", 2, slot=1))[0]
    for name in a:
        prod = a[name].down @ b[name].down.T  # A_i A_j^T
        assert prod.abs().max() < 1e-5, name
        assert a[name].down.abs().max() > 1e-3
    check_slots([{"cameo.orthogonal_slot": "0"}, {"cameo.orthogonal_slot": "1"}])
    with pytest.raises(ValueError, match="same orthogonal slot"):
        check_slots([{"cameo.orthogonal_slot": "1"}, {"cameo.orthogonal_slot": "1"}])


def test_resize_to_full_rank_reproduces_and_lower_rank_loses_energy(tiny_pipeline_dir, tmp_path):
    mods = load_modules(_lora(tiny_pipeline_dir, tmp_path / "a.safetensors", 1))[0]
    same, kept = resize(mods, 4)
    assert kept > 0.999999
    for name in mods:
        assert torch.allclose(delta(same[name]), delta(mods[name]), atol=1e-5)
    _, kept2 = resize(mods, 1)
    assert kept2 < 0.99
    out = tmp_path / "r2.safetensors"
    assert main(["resize", str(tmp_path / "a.safetensors"), "--rank", "2", "--out", str(out)]) == 0
    assert main(["inspect", str(out), str(tmp_path / "a.safetensors")]) == 0


@pytest.mark.parametrize("method", ["cat", "svd"])
def test_exact_merges_reproduce_the_linear_mix(tiny_pipeline_dir, tmp_path, method):
    p1 = _lora(tiny_pipeline_dir, tmp_path / "a.safetensors", 1, "mike")
    p2 = _lora(tiny_pipeline_dir, tmp_path / "b.safetensors", 2, "anna")
    cfg = GenerateConfig(prompt="mike and anna talking", **GEN)
    linear = load_pipeline(tiny_pipeline_dir)
    ll = apply_loras(linear, [f"{p1}:0.7", f"{p2}:0.5"])
    merged = load_pipeline(tiny_pipeline_dir)
    lm = apply_loras(merged, [f"{p1}:0.7", f"{p2}:0.5"], mix=method)
    assert len(lm.names) == 1
    a, b = generate_frames(linear, cfg, ll), generate_frames(merged, cfg, lm)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


@pytest.mark.parametrize("method", ["ties", "dare_linear"])
def test_peft_merges_run_and_change_the_output(tiny_pipeline_dir, tmp_path, method):
    mods = [
        load_modules(_lora(tiny_pipeline_dir, tmp_path / f"{i}.safetensors", i))[0] for i in (1, 2)
    ]
    out = merge(mods, [1.0, 1.0], method, density=0.5)
    assert out.keys() == mods[0].keys()
    name = next(iter(out))
    assert not torch.allclose(
        delta(out[name]), delta(mods[0][name]) + delta(mods[1][name]), atol=1e-4
    )


def test_region_mask_layout():
    m = region_token_mask("left", frames=2, height=2, width=4)
    assert m.tolist() == [1, 1, 0, 0, 1, 1, 0, 0] * 2
    box = region_token_mask((0.5, 0.5, 1.0, 1.0), frames=1, height=2, width=2)
    assert box.tolist() == [0, 0, 0, 1]


def test_regional_masks_touch_only_their_region(tiny_pipeline_dir, tmp_path):
    """The change a LoRA makes to the first block's self-attention output lands only on its
    region's tokens; without the mask it lands everywhere (so this test can fail)."""
    path = _lora(tiny_pipeline_dir, tmp_path / "a.safetensors", 1, "mike")
    pipe = load_pipeline(tiny_pipeline_dir)
    loaded = apply_loras(pipe, [str(path)], mix="regional", regions=["mike=left"])
    name = loaded.names[0]
    attn = pipe.transformer.blocks[0].attn1.to_q
    x = torch.randn(1, 16, attn.in_features)  # 16 video tokens: 1 frame of 4x4
    with torch.no_grad():
        with_lora = attn(x)
        pipe.transformer.disable_adapters()
        base = attn(x)
        pipe.transformer.enable_adapters()
        video = region_token_mask("left", 1, 4, 4)
        with regional(pipe.transformer, {name: (video, torch.zeros(8))}):
            masked = attn(x)
    changed = (masked - base).abs().amax(-1)[0] > 1e-6
    assert changed.tolist() == video.bool().tolist()
    assert ((with_lora - base).abs().amax(-1)[0] > 1e-6).all()


def test_regional_generation_runs_with_two_people(tiny_pipeline_dir, tmp_path):
    p1 = _lora(tiny_pipeline_dir, tmp_path / "a.safetensors", 1, "mike")
    p2 = _lora(tiny_pipeline_dir, tmp_path / "b.safetensors", 2, "anna")
    out = tmp_path / "two.mp4"
    assert (
        main(
            [
                "generate",
                "two people: on the left mike talking, on the right anna silent",
                "--base",
                str(tiny_pipeline_dir),
                "--lora",
                str(p1),
                "--lora",
                str(p2),
                "--mix",
                "regional",
                "--region",
                "mike=left",
                "--region",
                "anna=right",
                "--out",
                str(out),
                "--frames",
                "5",
                "--height",
                "32",
                "--width",
                "64",
                "--steps",
                "2",
            ]
        )
        == 0
    )
    assert out.stat().st_size > 0
    assert main(["generate", "x", "--mix", "blend", "--out", str(tmp_path / "y.mp4")]) == 2


def test_regional_text_mask_layout():
    left, right = region_token_mask("left", 1, 1, 4), region_token_mask((0.75, 0, 1, 1), 1, 1, 4)
    m = regional_text_mask([left, right], text_len=2)  # text: main, left, right; 2 tokens each
    assert m.int().tolist() == [
        [0, 0, 1, 1, 0, 0],  # token 0: left
        [0, 0, 1, 1, 0, 0],  # token 1: left
        [1, 1, 0, 0, 0, 0],  # token 2: no region, the main prompt
        [0, 0, 0, 0, 1, 1],  # token 3: right
    ]


def test_region_prompts_reach_only_their_region(tiny_pipeline_dir):
    """Under ``regional_prompts`` a cross-attention over the main, left and right prompts gives
    each region's tokens exactly what that region's prompt alone gives them; without the mask
    every token would read all three prompts (so this test can fail)."""
    pipe = load_pipeline(tiny_pipeline_dir)
    texts = encode_prompts(pipe, ["two people", "mike, smiling", "anna, silent"])  # (3, T, D)
    t = texts.shape[1]
    attn = pipe.transformer.blocks[0].attn2
    text = pipe.transformer.condition_embedder.text_embedder(texts)  # (3, T, d)
    x = torch.randn(1, 16, attn.to_q.in_features)  # 1 frame of 4x4 video tokens
    left, right = region_token_mask("left", 1, 4, 4).bool(), region_token_mask("right", 1, 4, 4)
    with torch.no_grad():
        alone = [attn(x, text[i : i + 1]) for i in range(3)]
        everything = attn(x, text.reshape(1, 3 * t, -1))
        with regional_prompts(pipe.transformer, regional_text_mask([left, right], t)):
            masked = attn(x, text.reshape(1, 3 * t, -1))
    torch.testing.assert_close(masked[0, left], alone[1][0, left], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(masked[0, ~left], alone[2][0, ~left], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(everything[0, left], alone[1][0, left], atol=1e-4)
    assert attn.processor.__class__.__name__ == "WanAttnProcessor"  # restored on exit


def test_generation_with_region_prompts(tiny_pipeline_dir, tmp_path):
    """A region prompt changes the clip, same seed same clip, and a bad one is a clear error."""
    pipe = load_pipeline(tiny_pipeline_dir)
    cfg = GenerateConfig(prompt="two people talking", **GEN)
    rp = ["left=mike, smiling, in a park", "right=anna, silent, on a yellow backdrop"]
    plain = generate_frames(pipe, cfg)
    own = generate_frames(pipe, GenerateConfig(prompt=cfg.prompt, region_prompt=rp, **GEN))
    again = generate_frames(pipe, GenerateConfig(prompt=cfg.prompt, region_prompt=rp, **GEN))
    assert own.shape == plain.shape and not np.array_equal(own, plain)
    np.testing.assert_array_equal(own, again)
    bad = ["generate", "x", "--region-prompt", "middle=mike", "--out", str(tmp_path / "y.mp4")]
    assert main(bad) == 2


def test_auto_region_prompts_read_each_side_of_the_prompt():
    from cameo.generation import auto_region_prompts

    p = "two people side by side in front of a red wall: on the left mike speaking, on the right anna silent"
    assert auto_region_prompts(p) == [
        "left=mike speaking, in front of a red wall",
        "right=anna silent, in front of a red wall",
    ]
    assert auto_region_prompts("In a park; on the right Anna, on the left Mike.") == [
        "left=Mike, In a park",
        "right=Anna, In a park",
    ]
    # the words of a side before its phrase, or only one side named: nothing to split
    assert auto_region_prompts("mike on the right and anna on the left") is None
    assert auto_region_prompts("mike speaking, on the left") is None


def test_region_prompt_auto_generates_what_the_explicit_prompts_do(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(tiny_pipeline_dir)
    prompt = "two people in a park: on the left mike smiling, on the right anna silent"
    auto = GenerateConfig(prompt=prompt, region_prompt=["auto"], **GEN)
    explicit = ["left=mike smiling, in a park", "right=anna silent, in a park"]
    same = GenerateConfig(prompt=prompt, region_prompt=explicit, **GEN)
    other = GenerateConfig(prompt=prompt, region_prompt=explicit[::-1][:1], **GEN)
    frames = generate_frames(pipe, auto)
    np.testing.assert_array_equal(frames, generate_frames(pipe, same))
    assert not np.array_equal(frames, generate_frames(pipe, other))
    out = str(tmp_path / "y.mp4")
    assert main(["generate", "mike speaking", "--region-prompt", "auto", "--out", out]) == 2


def test_window_weights_are_one_inside_and_feathered_at_inner_seams():
    from cameo.compose import Window, window_weights

    left, right = Window("a", (0, 2), (0, 4)), Window("b", (0, 2), (4, 8))
    wl, wr = window_weights(left, 2, 8, feather=2), window_weights(right, 2, 8, feather=2)
    third = 1 / 3
    assert wl[0].tolist() == pytest.approx([1, 1, 2 * third, third, 0, 0, 0, 0])
    assert wr[1].tolist() == pytest.approx([0, 0, 0, 0, third, 2 * third, 1, 1])
    assert window_weights(left, 2, 8, feather=0)[0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]


def test_windows_draw_each_window_from_its_crop_adapter_and_prompt(tiny_pipeline_dir, tmp_path):
    """Under ``--mix windows`` the prediction inside a window (past its feathered seam) is the
    transformer's on that window's crop alone, with that person's adapter alone, reading that
    person's prompt; with both adapters, the main prompt or the whole canvas it differs (so
    this test fails if the window, the gate or the prompt chunk is ignored)."""
    from cameo.compose import window_denoising
    from cameo.generation.regions import window_plan

    p1 = _lora(tiny_pipeline_dir, tmp_path / "a.safetensors", 1, "mike")
    p2 = _lora(tiny_pipeline_dir, tmp_path / "b.safetensors", 2, "anna")
    pipe = load_pipeline(tiny_pipeline_dir)
    loaded = apply_loras(pipe, [str(p1), str(p2)], mix="windows", regions=["mike=left"])
    cfg = GenerateConfig(
        prompt="two people: on the left mike smiling, on the right anna silent",
        region_prompt=["auto"],
        **GEN,
    )
    windows = window_plan(pipe, cfg, loaded)
    assert [(w.cols, w.prompt) for w in windows] == [((0, 4), 1), ((4, 8), 2)]
    texts = encode_prompts(pipe, ["two people", "mike smiling", "anna silent"])  # (3, T, D)
    t = texts.shape[1]
    x, step = torch.randn(1, 4, 2, 4, 8), torch.tensor([500.0])  # (B, C, F, h, w) latents
    tr = pipe.transformer

    def alone(crop, text, adapters):
        pipe.set_adapters(adapters, [1.0] * len(adapters))
        out = tr(crop, step, text, return_dict=False)[0]
        pipe.set_adapters(loaded.names, [1.0, 1.0])
        return out

    with torch.no_grad():
        with window_denoising(tr, windows, t, feather=2):
            out = tr(x, step, texts.reshape(1, 3 * t, -1), return_dict=False)[0]
        with fast.enabled(tr) as ff, window_denoising(tr, windows, t, feather=2):
            quick = tr(x, step, texts.reshape(1, 3 * t, -1), return_dict=False)[0]
        # the windows ran through the fast path: it computed (merged weights cached), no fallback
        assert ff.merged.entries and not ff.fallbacks, ff.fallbacks
        torch.testing.assert_close(quick, out, atol=1e-5, rtol=1e-5)
        mike = alone(x[..., :4], texts[1:2], [loaded.names[0]])
        anna = alone(x[..., 4:], texts[2:3], [loaded.names[1]])
        both = tr(x[..., :4], step, texts[1:2], return_dict=False)[0]
        main_prompt = alone(x[..., :4], texts[0:1], [loaded.names[0]])
        canvas = alone(x, texts[1:2], [loaded.names[0]])[..., :4]
    torch.testing.assert_close(out[..., :2], mike[..., :2], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out[..., 6:], anna[..., 2:], atol=1e-5, rtol=1e-5)
    for other in (both, main_prompt, canvas):
        assert not torch.allclose(out[..., :2], other[..., :2], atol=1e-4)
    assert "forward" not in tr.__dict__  # the model's own forward is back


def test_windows_generation_changes_the_clip_and_repeats(tiny_pipeline_dir, tmp_path):
    p1 = _lora(tiny_pipeline_dir, tmp_path / "a.safetensors", 1, "mike")
    p2 = _lora(tiny_pipeline_dir, tmp_path / "b.safetensors", 2, "anna")
    prompt = "two people in a park: on the left mike smiling, on the right anna silent"
    cfg = GenerateConfig(prompt=prompt, region_prompt=["auto"], **GEN)
    clips = []
    for mix in ("windows", "windows", "regional"):
        pipe = load_pipeline(tiny_pipeline_dir)
        loaded = apply_loras(pipe, [str(p1), str(p2)], mix=mix)
        clips.append(generate_frames(pipe, cfg, loaded))
    np.testing.assert_array_equal(clips[0], clips[1])
    assert not np.array_equal(clips[0], clips[2])
    pipe = load_pipeline(tiny_pipeline_dir)
    loaded = apply_loras(pipe, [str(p1), str(p2)], mix="windows")
    plain = generate_frames(pipe, replace(cfg, fast=False), loaded).astype(int)
    assert np.abs(plain - clips[0]).max() <= 1  # the fast path (default) draws the same clip
    # without --region-prompt, windows read each side's words from the prompt, as 'auto' does
    pipe = load_pipeline(tiny_pipeline_dir)
    loaded = apply_loras(pipe, [str(p1), str(p2)], mix="windows")
    implicit = GenerateConfig(prompt=prompt, **GEN)  # the mix comes from apply_loras
    np.testing.assert_array_equal(generate_frames(pipe, implicit, loaded), clips[0])
    out = tmp_path / "two.mp4"
    argv = ["generate", prompt, "--base", str(tiny_pipeline_dir), "--lora", str(p1), "--lora",
            str(p2), "--mix", "windows", "--region-prompt", "auto", "--out", str(out), "--frames",
            "5", "--height", "32", "--width", "64", "--steps", "2"]  # fmt: skip
    assert main(argv) == 0 and out.stat().st_size > 0


def test_initial_noise_is_the_seeds_and_a_given_noise_is_used(tiny_pipeline_dir):
    """``initial_noise`` is what the pipeline draws from the seed (same clip when passed back);
    a crop of a wider clip's noise is taken as given (a paired single-person baseline)."""
    from cameo.generation.sampling import initial_noise

    pipe = load_pipeline(tiny_pipeline_dir)
    cfg = GenerateConfig(prompt="a man speaking", **{**GEN, "width": 32})
    drawn = generate_frames(pipe, cfg)
    noise = initial_noise(pipe, cfg)
    np.testing.assert_array_equal(generate_frames(pipe, cfg, noise=noise), drawn)
    wide = initial_noise(pipe, GenerateConfig(prompt="", **GEN))  # (1, C, F', 8, 16)
    assert wide.shape[-1] == 2 * noise.shape[-1]
    half = generate_frames(pipe, cfg, noise=wide[..., noise.shape[-1] :])
    assert not np.array_equal(half, drawn)
