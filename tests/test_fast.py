"""cameo.fast computes what the plain diffusers + PEFT forward computes: outputs, losses and
gradients, for a table of adapter layouts, shapes and switches. Every adapter is perturbed
first (B starts at zero, so an untouched adapter would prove nothing). No timings here."""

import json

import numpy as np
import pytest
import torch

from cameo.diffusion import flow_matching_loss
from cameo.lora import LoraSpec, adapters_disabled, add_lora, lora_parameters
from cameo.models import fast
from cameo.training import flat
from conftest import tiny_parts, train_config

# fp32 sums taken in another order; the outputs are O(1)
ATOL, RTOL = 2e-5, 1e-4

SPECS = {
    "attention (default)": LoraSpec(rank=4, alpha=4),
    "attention + ffn, rsLoRA": LoraSpec(rank=3, alpha=6, ffn=True, rslora=True),
    "q and v only": LoraSpec(rank=2, alpha=1, targets="to_q,to_v"),
    "output projections only": LoraSpec(rank=4, alpha=4, targets="to_out.0,proj_out"),
}


def _model(spec: LoraSpec | None = LoraSpec(rank=4, alpha=4), seed: int = 0):
    _, transformer = tiny_parts(seed)
    if spec is not None:
        add_lora(transformer, spec)
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in lora_parameters(transformer):
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return transformer


def _inputs(batch=3, frames=1, size=8, table_rows=4, seed=0, padded=True):
    """Prompt rows zero-padded after 3, 5, 2, 6 tokens, as the pipeline's encoder pads."""
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(table_rows, 7, 384, generator=g)
    if padded:
        for i, length in enumerate([3, 5, 2, 6, 4][:table_rows]):
            table[i, length:] = 0
    x0 = torch.randn(batch, 4, frames, size, size, generator=g)
    return {
        "table": table,
        "x0": x0,
        "noise": torch.randn(x0.shape, generator=g),
        "sigmas": torch.rand(batch, generator=g),
        "text": table[torch.arange(batch) % table_rows],
    }


def _loss_and_grads(model, b):
    for p in model.parameters():
        p.grad = None
    loss = flow_matching_loss(model, b["x0"], b["text"], b["sigmas"], b["noise"]).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def _predict(model, b):
    with torch.no_grad():
        return model(b["x0"], b["sigmas"] * 1000, b["text"], return_dict=False)[0]


def _assert_ran_fast(ff, calls_before: int = 0) -> int:
    """The fast path computed the calls since ``calls_before`` itself: an equality with the plain
    path proves nothing if every call fell back to it."""
    assert not ff.fallbacks, ff.fallbacks
    assert ff.served > calls_before, "the fast path never ran"
    return ff.served


def _assert_same_grads(g0: dict, g1: dict):
    assert g0.keys() == g1.keys() and g0
    for k in g0:
        assert g0[k].abs().max() > 0, f"{k}: zero gradient proves nothing"
        torch.testing.assert_close(g1[k], g0[k], atol=ATOL, rtol=RTOL, msg=k)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("cache", ["none", "cache", "cache, padded prompts"])
def test_training_matches_plain_peft(name, cache):
    model = _model(SPECS[name])
    b = _inputs(padded="padded" in cache)
    loss0, grads0 = _loss_and_grads(model, b)
    ff = fast.enable(model)
    if cache != "none":
        assert ff.cache_text(b["table"])
        merged = ff._cached_base(b["text"])["mask"] is not None
        assert merged == ("padded" in cache)  # rows 0-2 end in padding from position 5 on
    loss1, grads1 = _loss_and_grads(model, b)
    _assert_ran_fast(ff)
    torch.testing.assert_close(loss1, loss0, atol=ATOL, rtol=RTOL)
    _assert_same_grads(grads0, grads1)


@pytest.mark.parametrize("frames,size", [(1, 8), (3, 8), (2, 16)])
def test_shapes_and_inference_match(frames, size):
    model = _model()
    b = _inputs(batch=2, frames=frames, size=size)
    want = _predict(model, b)
    loss0, grads0 = _loss_and_grads(model, b)
    ff = fast.enable(model)
    ff.cache_text(b["table"])
    torch.testing.assert_close(_predict(model, b), want, atol=ATOL, rtol=RTOL)
    loss1, grads1 = _loss_and_grads(model, b)
    torch.testing.assert_close(loss1, loss0, atol=ATOL, rtol=RTOL)
    _assert_same_grads(grads0, grads1)
    _assert_ran_fast(ff)


def test_every_option_alone_matches():
    """Each switch of FastOptions off on its own still computes the same thing."""
    model = _model(SPECS["attention + ffn, rsLoRA"])
    b = _inputs()
    want_loss, want_grads = _loss_and_grads(model, b)
    want_out = _predict(model, b)
    for option in fast.FastOptions.__dataclass_fields__:
        fast.disable(model)
        ff = fast.enable(model, options=fast.FastOptions(**{option: False}))
        ff.cache_text(b["table"])
        loss, grads = _loss_and_grads(model, b)
        torch.testing.assert_close(loss, want_loss, atol=ATOL, rtol=RTOL, msg=option)
        _assert_same_grads(want_grads, grads)
        torch.testing.assert_close(_predict(model, b), want_out, atol=ATOL, rtol=RTOL)
        assert _assert_ran_fast(ff) == 2, option  # the training call and the prediction


def test_unpadded_lengths():
    table = torch.randn(3, 6, 4)
    table[0, 2:], table[1, 5:], table[2, 0:] = 0, 0, 0
    assert fast._unpadded_lengths(table).tolist() == [2, 5, 0]
    table[2, -1] = 1.0  # not padded alike: no merging
    assert fast._unpadded_lengths(table) is None


def test_prompts_outside_the_cache_and_changed_text_weights():
    model = _model()
    b = _inputs()
    want = _predict(model, b)
    ff = fast.enable(model)
    ff.cache_text(b["table"][:1])  # the other prompts of the batch are not cached
    torch.testing.assert_close(_predict(model, b), want, atol=ATOL, rtol=RTOL)
    served = _assert_ran_fast(ff)
    ff.cache_text(b["table"])
    with torch.no_grad():  # a frozen text weight changes in place: the cache must notice
        model.condition_embedder.text_embedder.linear_1.weight.mul_(1.5)
    got = _predict(model, b)
    _assert_ran_fast(ff, served)
    fast.disable(model)
    want = _predict(model, b)
    assert not torch.allclose(got, _predict(_model(), b))
    torch.testing.assert_close(got, want, atol=ATOL, rtol=RTOL)


def test_merged_inference_follows_updates_and_scales():
    """The cached W + sBA of the no-grad path is rebuilt after an optimiser step, a scale
    change and with adapters disabled."""
    model = _model()
    b = _inputs()
    opt = torch.optim.AdamW(lora_parameters(model), lr=0.05)

    def plain_then_fast():
        fast.disable(model)
        want = _predict(model, b)
        model.forward = ff
        served = ff.served
        torch.testing.assert_close(_predict(model, b), want, atol=ATOL, rtol=RTOL)
        _assert_ran_fast(ff, served)
        return want

    ff = fast.enable(model)
    first = plain_then_fast()
    _loss_and_grads(model, b)
    opt.step()
    assert not torch.allclose(plain_then_fast(), first)
    for m in model.modules():
        if hasattr(m, "scaling"):
            m.scaling["default"] *= 0.5
    plain_then_fast()
    with adapters_disabled(model):
        plain_then_fast()
        no_lora = _predict(model, b)
    fast.disable(model)
    base = _model(None)
    torch.testing.assert_close(_predict(base, b), no_lora, atol=ATOL, rtol=RTOL)


def test_frozen_down_projection():
    """Composition-ready training freezes A: only B gets a gradient, the same as PEFT's."""
    model = _model()
    for n, p in model.named_parameters():
        if "lora_A" in n:
            p.requires_grad_(False)
    b = _inputs()
    _, want = _loss_and_grads(model, b)
    ff = fast.enable(model)
    ff.cache_text(b["table"])
    _, got = _loss_and_grads(model, b)
    _assert_ran_fast(ff)
    assert all("lora_B" in k for k in got)
    _assert_same_grads(want, got)


def test_unsupported_cases_fall_back_to_the_original_forward():
    model = _model()
    b = _inputs()
    want_loss, want_grads = _loss_and_grads(model, b)
    ff = fast.enable(model)
    model.enable_gradient_checkpointing()
    loss, grads = _loss_and_grads(model, b)
    assert ff.fallbacks == {"gradient checkpointing": 1}
    torch.testing.assert_close(loss, want_loss, atol=ATOL, rtol=RTOL)
    _assert_same_grads(want_grads, grads)
    model.disable_gradient_checkpointing()
    layer = model.blocks[0].attn1.to_q.lora_B["default"]
    handle = layer.register_forward_hook(lambda mod, inp, out: out * 0)
    try:
        hooked = _predict(model, b)
    finally:
        handle.remove()
    assert ff.fallbacks.get("hooks on a LoRA layer") == 1
    assert not torch.allclose(hooked, _predict(model, b))


def test_fused_adamw_matches_adamw():
    torch.manual_seed(0)
    params = [torch.randn(5, 3, requires_grad=True), torch.randn(4, requires_grad=True)]
    twins = [p.detach().clone().requires_grad_() for p in params]
    a = torch.optim.AdamW(params, lr=0.1, weight_decay=0.01)
    b = flat.fused_adamw(twins, lr=0.1, weight_decay=0.01)
    for step in range(3):
        for ps in (params, twins):
            for i, p in enumerate(ps):
                p.grad = torch.full_like(p, 0.5 * (i + 1) * (step - 1))
        a.step()
        b.step()
    for p, q in zip(params, twins, strict=True):
        torch.testing.assert_close(q, p)


def test_flat_parameters_train_like_separate_tensors():
    """Views of one flat buffer, one AdamW over it: the same weights as AdamW over the tensors
    themselves, step after step; and the optimiser state converts both ways exactly."""
    plain, flat_model = _model(), _model()
    b = _inputs()
    separate = lora_parameters(plain)
    views = lora_parameters(flat_model)
    buf = flat.FlatParameters(views)
    assert all(
        v.untyped_storage().data_ptr() == buf.param.untyped_storage().data_ptr() for v in views
    )
    a = flat.fused_adamw(separate, lr=0.05, weight_decay=0.01)
    f = flat.fused_adamw([buf.param], lr=0.05, weight_decay=0.01)
    for _ in range(3):
        for model, opt, params in ((plain, a, separate), (flat_model, f, [buf.param])):
            loss = flow_matching_loss(model, b["x0"], b["text"], b["sigmas"], b["noise"]).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=True)
            opt.step()
        a.zero_grad(set_to_none=True)
        buf.zero_grad()
        assert all(v.grad is not None and not v.grad.any() for v in views)
    for p, q in zip(separate, views, strict=True):
        torch.testing.assert_close(q, p)
    start = lora_parameters(_model())
    assert all(not torch.equal(v, s) for v, s in zip(views, start, strict=True))  # all trained
    per = buf.per_tensor_state(f.state_dict())
    ref = a.state_dict()
    assert per["param_groups"][0]["params"] == ref["param_groups"][0]["params"]
    for i, st in ref["state"].items():
        for k, v in st.items():
            assert torch.equal(per["state"][i][k], v), (i, k)
    back = buf.flat_state(per)
    for k, v in f.state_dict()["state"][0].items():
        assert torch.equal(back["state"][0][k], v), k
    partial = {**per, "state": {0: per["state"][0]}}
    with pytest.raises(ValueError, match="only some"):
        buf.flat_state(partial)
    own = f.state_dict()
    assert buf.flat_state(own) is own  # a flat state passes through


def test_merged_inference_follows_a_flat_buffer_step():
    """Generation's merged-weight cache must see an optimiser step taken on the flat buffer
    (the views' own version counters do not move then), and a copy into a view."""
    model = _model()
    b = _inputs()
    buf = flat.FlatParameters(lora_parameters(model))
    ff = fast.enable(model)
    opt = torch.optim.SGD([buf.param], lr=0.5)
    before = _predict(model, b)
    buf.param.grad.normal_()
    opt.step()
    after = _predict(model, b)
    _assert_ran_fast(ff)
    assert not torch.allclose(before, after)
    fast.disable(model)
    torch.testing.assert_close(after, _predict(model, b), atol=ATOL, rtol=RTOL)  # plain PEFT
    ff = fast.enable(model)
    cached = _predict(model, b)  # fills the cache again
    with torch.no_grad():
        for v in buf.views:
            v.copy_(torch.zeros_like(v))  # as the EMA weights are copied in at the end
    zeroed = _predict(model, b)
    assert _assert_ran_fast(ff) == 2
    assert not torch.allclose(cached, zeroed)
    fast.disable(model)
    torch.testing.assert_close(zeroed, _predict(model, b), atol=ATOL, rtol=RTOL)


def test_checkpoint_of_views_saves_copies(tmp_path):
    from cameo.training import checkpoint as ckpt

    views = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]
    flat.FlatParameters(views)  # the tensors are now views of one buffer
    path = ckpt.save(tmp_path, 1, {"a": views[0], "b": views[1]}, {})
    tensors, _, _ = ckpt.load(path)
    torch.testing.assert_close(tensors["a"], views[0].detach())
    torch.testing.assert_close(tensors["b"], views[1].detach())


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from cameo.data.world_folders import write_person_folder

    return write_person_folder(3, tmp_path_factory.mktemp("data") / "photos", 6)


def test_cameo_train_fast_and_plain_give_the_same_losses(photos, tiny_pipeline_dir, tmp_path):
    from cameo.training import Trainer

    losses = {}
    for flag in (True, False):
        out = tmp_path / f"fast-{flag}"
        cfg = train_config(photos, tiny_pipeline_dir, out, steps=4, fast=flag, caption_dropout=0.5)
        trainer = Trainer(cfg, log=lambda *_: None)
        trainer.train()
        lines = (out / "losses.jsonl").read_text().splitlines()
        losses[flag] = [json.loads(line)["loss"] for line in lines]
        if flag:
            ff = fast.get(trainer.pipe.transformer)
            assert ff is not None and ff.text is not None
            assert _assert_ran_fast(ff) >= 4  # every training step's forward
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-4)
    assert len(set(losses[True])) > 1


def test_generate_fast_and_plain_give_the_same_frames(tiny_pipeline_dir, tmp_path):
    from cameo.generation import GenerateConfig, generate_frames
    from cameo.models import load_pipeline

    pipe = load_pipeline(tiny_pipeline_dir)
    add_lora(pipe.transformer, LoraSpec(rank=4, alpha=4))
    with torch.no_grad():
        for p in lora_parameters(pipe.transformer):
            p.add_(torch.randn_like(p) * 0.3)
    cfg = dict(prompt="mike, smiling", frames=5, height=32, width=32, steps=3, guidance=3.0)
    served = []
    real_forward = fast.FastForward._forward

    def counted(self, *args):
        served.append(1)
        return real_forward(self, *args)

    fast.FastForward._forward = counted
    try:
        plain = generate_frames(pipe, GenerateConfig(**cfg, fast=False)).astype(int)
        assert not served  # --no-fast never enters the fast path
        quick = generate_frames(pipe, GenerateConfig(**cfg, fast=True)).astype(int)
    finally:
        fast.FastForward._forward = real_forward
    assert len(served) >= 3  # at least one fast forward per sampling step
    assert fast.get(pipe.transformer) is None  # switched off again after the call
    assert np.abs(plain - quick).max() <= 1
    assert plain.std() > 0
