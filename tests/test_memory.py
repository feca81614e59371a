"""fp8 storage, offloading and expert placement (``cameo.models.memory``), on tiny random
configs of the real classes. On the CPU the offload hooks move nothing (onload = offload =
CPU), so these tests check what is attached and what trains; ``gpu`` tests check devices."""

import pytest
import torch
from diffusers import WanTransformer3DModel
from diffusers.hooks import HookRegistry, ModelHook

from cameo.lora import LoraSpec, add_lora, lora_parameters
from cameo.models import load_pipeline
from cameo.models.memory import (
    FP8,
    expert_module,
    is_offloaded,
    place_for_training,
    store_in_fp8,
)
from test_real_wan import wan21_dir, wan22_dir  # noqa: F401  (fixtures)

GROUP = "group_offloading"


def tiny_lora_model(dtype=torch.float32, nonzero_b: bool = True) -> WanTransformer3DModel:
    """A 2-block Wan transformer (width 64) with a rank-4 LoRA on the default targets; the
    LoRA's B made non-zero so that A's gradients are not all zero."""
    torch.manual_seed(0)
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=4,
        out_channels=4,
        text_dim=32,
        freq_dim=16,
        ffn_dim=128,
        num_layers=2,
    ).to(dtype)
    add_lora(model, LoraSpec(rank=4, alpha=4))
    g = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_" in name:  # the adapter trains in fp32 whatever the base's dtype
            p.data = p.data.float()
        if "lora_B" in name and nonzero_b:
            p.data = torch.randn(p.shape, generator=g) * 0.05
    return model


def lora_grads(model, dtype=torch.float32) -> torch.Tensor:
    """Gradients of every LoRA tensor after one flow-matching-like loss, (N,) in fp32."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 2, 8, 8, generator=g).to(dtype)
    text = torch.randn(2, 8, 32, generator=g).to(dtype)
    out = model(
        hidden_states=x,
        timestep=torch.tensor([300.0, 700.0]),
        encoder_hidden_states=text,
        return_dict=False,
    )[0]
    out.float().square().mean().backward()
    return torch.cat([p.grad.flatten().float() for p in lora_parameters(model)])


def test_fp8_stores_frozen_weights_in_float8_and_leaves_the_lora_trainable_fp32():
    model = tiny_lora_model(torch.bfloat16)
    place_for_training(None, model, device="cpu", fp8=True)
    params = dict(model.named_parameters())
    for name in ("attn1.to_q.base_layer", "attn2.to_out.0", "ffn.net.0.proj", "ffn.net.2"):
        assert params[f"blocks.1.{name}.weight"].dtype == FP8, name
    for name, p in params.items():
        if "lora_" in name:
            assert p.dtype == torch.float32 and p.requires_grad, name
    # norms, embeddings and the output projection keep the compute dtype (diffusers' skips)
    assert params["blocks.0.norm2.weight"].dtype == torch.bfloat16
    assert params["proj_out.weight"].dtype == torch.bfloat16
    assert params["patch_embedding.weight"].dtype == torch.bfloat16
    fp8_bytes = sum(p.nbytes for p in model.parameters() if p.dtype == FP8)
    assert fp8_bytes > 0.8 * sum(p.nbytes for n, p in params.items() if "lora_" not in n) / 2


def test_a_lora_step_under_fp8_storage_has_gradients_close_to_bf16():
    """float8 e4m3 keeps 3 mantissa bits: each frozen weight is rounded by up to 2^-4 of itself
    (about 3.6% RMS), and independent roundings move a layer's outputs, and so the adapter's
    gradients, by a few percent. Measured here: 3.1% relative L2 error against bf16 storage
    (bf16 itself is 0.6% from fp32). Tolerance: under 10%, cosine above 0.99; and above 0.5%,
    so that the test fails if the weights were not stored in fp8 at all."""
    bf16 = lora_grads(tiny_lora_model(torch.bfloat16), torch.bfloat16)
    fp8_model = tiny_lora_model(torch.bfloat16)
    store_in_fp8(fp8_model)
    fp8 = lora_grads(fp8_model, torch.bfloat16)
    rel = ((fp8 - bf16).norm() / bf16.norm()).item()
    assert 0.005 < rel < 0.10
    assert torch.nn.functional.cosine_similarity(fp8, bf16, dim=0) > 0.99


class _Count(ModelHook):
    def __init__(self, log: list, name: int):
        super().__init__()
        self.log, self.name = log, name

    def post_forward(self, module, output):
        self.log.append(self.name)
        return output


def _post_forwards_in_backward(model) -> list:
    log: list = []
    for i, block in enumerate(model.blocks):
        HookRegistry.check_if_exists_or_initialize(block).register_hook(_Count(log, i), "count")
    model.train()
    out = model(
        hidden_states=torch.randn(1, 4, 2, 8, 8),
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 8, 32),
        return_dict=False,
    )[0]
    log.clear()
    out.square().mean().backward()
    return log


def test_whole_block_checkpointing_runs_the_hooks_that_stock_checkpointing_skips():
    """torch stops a recomputation at the block's last saved tensor: the block never returns
    in the backward, so its post-forward hooks (cast back to fp8, offload) do not run."""
    stock = tiny_lora_model()
    stock.enable_gradient_checkpointing()
    assert _post_forwards_in_backward(stock) == []
    placed = tiny_lora_model()
    place_for_training(None, placed, device="cpu", offload="block")  # switches it on, whole
    assert _post_forwards_in_backward(placed) == [1, 0]


@pytest.mark.parametrize("level", ["block", "leaf"])
def test_training_offload_groups_hold_only_frozen_weights_and_the_lora_trains(level):
    model = tiny_lora_model()
    lora = lora_parameters(model)
    place_for_training(None, model, device="cpu", offload=level)
    assert is_offloaded(model) and model.is_gradient_checkpointing
    grouped = []
    for m in model.modules():
        registry = getattr(m, "_diffusers_hook", None)
        hook = registry.get_hook(GROUP) if registry is not None else None
        if hook is not None:
            assert hook.group.onload_device == torch.device("cpu")
            assert hook.group.modules == []  # tensors listed one by one, frozen only
            grouped += hook.group.parameters
    assert all(not p.requires_grad for p in grouped)
    ids = {id(p) for p in grouped}
    assert not ids & {id(p) for p in lora}
    if level == "block":  # every frozen weight of every block is in a group
        assert all(
            id(p) in ids for b in model.blocks for p in b.parameters() if not p.requires_grad
        )
    before = [p.detach().clone() for p in lora]
    opt = torch.optim.AdamW(lora, lr=1e-2)
    for _ in range(2):
        lora_grads(model)
        opt.step()
        opt.zero_grad()
    assert all(not torch.equal(a, p) for a, p in zip(before, lora, strict=True))


def test_training_refuses_model_offload_and_a_model_without_lora():
    with pytest.raises(ValueError, match="offload"):
        place_for_training(None, tiny_lora_model(), device="cpu", offload="model")
    bare = tiny_lora_model().requires_grad_(False)
    with pytest.raises(ValueError, match="LoRA"):
        place_for_training(None, bare, device="cpu")


def test_the_idle_wan22_expert_rests_on_the_cpu_behind_offload_hooks(wan22_dir):  # noqa: F811
    pipe = load_pipeline(wan22_dir, "cpu")
    model = expert_module(pipe, "low")
    add_lora(model, LoraSpec(rank=4, alpha=4))
    notes = place_for_training(pipe, model, device="cpu")
    assert is_offloaded(pipe.transformer) and not is_offloaded(model)
    hook = pipe.transformer.blocks[0]._diffusers_hook.get_hook(GROUP)
    assert hook.group.offload_device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in pipe.transformer.parameters())
    assert any("other expert" in n for n in notes)
    # loading for one expert places the other the same way
    high_only = load_pipeline(wan22_dir, "cpu", expert="high")
    assert is_offloaded(high_only.transformer_2) and not is_offloaded(high_only.transformer)


def test_generation_offload_attaches_group_hooks_and_draws_the_same_clip(wan21_dir):  # noqa: F811
    from cameo.generation import GenerateConfig, generate_frames

    cfg = GenerateConfig(
        prompt="mike, speaking", frames=5, height=32, width=32, steps=2, fast=False
    )
    plain = generate_frames(load_pipeline(wan21_dir, "cpu"), cfg)
    pipe = load_pipeline(wan21_dir, "cpu", offload="block")
    assert pipe.transformer.blocks[0]._diffusers_hook.get_hook(GROUP) is not None
    assert is_offloaded(pipe.text_encoder)  # the text encoder visits, then leaves
    assert (generate_frames(pipe, cfg) == plain).all()  # on the CPU the hooks move nothing


@pytest.mark.gpu
def test_on_cuda_the_offloaded_blocks_rest_on_the_cpu_and_the_lora_on_the_gpu():
    model = tiny_lora_model(torch.bfloat16)
    lora = lora_parameters(model)
    place_for_training(None, model, device="cuda", fp8=True, offload="block")
    assert all(p.device.type == "cuda" for p in lora)
    assert all(p.device.type == "cpu" for p in model.blocks[0].parameters() if not p.requires_grad)
    before = [p.detach().clone() for p in lora]
    opt = torch.optim.AdamW(lora, lr=1e-2)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        g = torch.Generator().manual_seed(2)
        out = model(
            hidden_states=torch.randn(2, 4, 2, 8, 8, generator=g).cuda(),
            timestep=torch.tensor([300.0, 700.0]).cuda(),
            encoder_hidden_states=torch.randn(2, 8, 32, generator=g).cuda(),
            return_dict=False,
        )[0]
    out.float().square().mean().backward()
    opt.step()
    assert all(not torch.equal(a, p) for a, p in zip(before, lora, strict=True))
    assert all(p.device.type == "cpu" for p in model.blocks[1].parameters() if not p.requires_grad)


def test_a_streamed_text_encoder_has_layer_hooks_inside_and_none_after(wan21_dir):  # noqa: F811
    from cameo.models import encode_prompts
    from cameo.models.memory import streamed

    pipe = load_pipeline(wan21_dir, "cpu")
    plain = encode_prompts(pipe, ["mike, speaking"])
    layers = pipe.text_encoder.encoder.block
    with streamed(pipe.text_encoder, torch.device("cpu")):
        assert layers[0]._diffusers_hook.get_hook(GROUP) is not None
        assert torch.equal(encode_prompts(pipe, ["mike, speaking"]), plain)
    assert not is_offloaded(pipe.text_encoder)


def test_a_plain_pipeline_keeps_its_fast_path_after_a_call(tiny_pipeline_dir):
    """A pipeline call leaves an empty diffusers hook registry on the transformer (its cache
    contexts); that is no placement hook, and the fast path must stay on."""
    from cameo.generation import GenerateConfig, generate_frames
    from cameo.models.memory import has_hooks

    pipe = load_pipeline(tiny_pipeline_dir)
    generate_frames(pipe, GenerateConfig(prompt="mike", frames=1, height=32, width=32, steps=1))
    assert hasattr(pipe.transformer, "_diffusers_hook") and not has_hooks(pipe.transformer)
    assert has_hooks(load_pipeline(tiny_pipeline_dir, "cpu", offload="block").transformer)
