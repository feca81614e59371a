"""The fast path: the same Wan transformer and PEFT adapters, run with fewer, larger operations.

Why this module exists: on the built-in model (8 blocks of width 128, 64 tokens per photo) a
stock diffusers + PEFT training step spends most of its time dispatching small operations, not
multiplying matrices (``docs/performance.md`` has the profile). PEFT adds five operations per
adapted layer in the forward and about ten autograd nodes in the backward; Wan's attention adds
rotary and norm bookkeeping per head. Nothing here changes what is computed:

- ``enable(transformer)`` replaces the transformer's ``forward`` (on the instance, the way
  Accelerate's hooks do) by ``FastForward``, which reads the very same weights, including PEFT's
  ``lora_A``/``lora_B``/``scaling`` of the active adapters, and falls back to the original
  forward for anything it does not cover (mixed precision, gradient checkpointing, DoRA,
  dropout, hooks such as regional masks, image conditioning, custom attention processors).
- a frozen linear layer and its LoRA terms run as plain ``addmm`` operations (no module calls),
  so autograd's backward stays in C++; in self-attention q, k and v share one matrix multiply
  (a concatenated copy of the frozen weights) and one for their LoRA ``A``. Frozen weights get
  no gradient, as in PEFT.
- what depends only on the captions is computed once: the text projection and each block's
  frozen cross-attention keys and values (``cache_text``). The LoRA part of those keys and
  values, if they are targets, is still computed every step.
- rotary tables are built once per video shape and applied with one multiply-add.
- in inference mode (generation) each adapted layer uses a cached merged weight W + s·B·A, so an
  unfused LoRA costs what the base model costs; the cache follows weight and scale changes.

``tests/test_fast.py`` checks outputs, losses and gradients against the plain PEFT path.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.modeling_outputs import Transformer2DModelOutput

from .fast_terms import (
    Budget,
    Grouped,
    MergedCache,
    Unsupported,
    add_terms,
    base_linear,
    lora_terms,
    versions,
)

Tensor = torch.Tensor

CACHE_BUDGET_BYTES = 256 * 2**20  # extra memory the fast path may hold (weights, text caches)

# ---------------------------------------------------------------------------- the forward


@dataclass
class FastOptions:
    """Which parts of the fast path are on (all by default; the benchmark turns them off one by
    one to measure each)."""

    lora_ops: bool = field(
        default=True,
        metadata={"help": "LoRA as addmm with alpha (no PEFT module calls); backward all in C++"},
    )
    group_qkv: bool = field(
        default=True, metadata={"help": "self-attention q, k, v as one matrix multiply"}
    )
    text_cache: bool = field(
        default=True, metadata={"help": "frozen text projection and cross-attention K/V cached"}
    )
    merge_padding: bool = field(
        default=True,
        metadata={"help": "the prompts' trailing padding as one key with a log-count bias"},
    )
    complex_rotary: bool = field(
        default=True, metadata={"help": "rotary tables once per shape, one complex multiply"}
    )
    distinct_text_rows: bool = field(
        default=True,
        metadata={
            "help": "cross-attention K/V LoRA terms once per distinct prompt row, then spread"
        },
    )
    merged_inference: bool = field(
        default=True, metadata={"help": "no-grad calls use cached W + s·B·A"}
    )


def _rope_complex(model, hidden_states: Tensor) -> Tensor:
    """Wan's rotary factors as complex numbers (1, N, 1, 1, hd/2): pairs (x0, x1) of a head
    rotate as (x0 + i x1)(cos + i sin)."""
    cos, sin = model.rope(hidden_states)  # (1, N, 1, hd) each, pairs repeated, float64 on CPU
    freqs = torch.complex(cos[..., 0::2], sin[..., 1::2]).unsqueeze(2)
    return freqs.to(torch.complex64 if hidden_states.dtype != torch.float64 else freqs.dtype)


def _rotary(x: Tensor, freqs: Tensor) -> Tensor:
    """x (B, N, 2, H, hd) real -> rotated, as one complex multiply."""
    z = torch.view_as_complex(x.unflatten(-1, (-1, 2)))
    return torch.view_as_real(z * freqs).flatten(-2)


def _rotary_stock(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """diffusers' own rotary code (for measuring the complex one against it)."""
    x1, x2 = x.unflatten(-1, (-1, 2)).unbind(-1)
    cos, sin = cos[..., 0::2], sin[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(x)


class FastForward:
    """A drop-in ``forward`` for a diffusers ``WanTransformer3DModel`` (with or without PEFT
    adapters); see the module docstring."""

    def __init__(
        self,
        model,
        original,
        cache_budget: int = CACHE_BUDGET_BYTES,
        options: FastOptions | None = None,
    ):
        self.model, self.original = model, original
        self.options = options or FastOptions()
        self.budget = Budget(cache_budget)
        self.rope: dict[tuple, object] = {}
        self.merged = MergedCache(self.budget)
        self.text: dict | None = None
        self.fallbacks: dict[str, int] = {}  # why a call ran the original forward, how often
        self.served = 0  # calls the fast path computed itself
        self.blocks = [self._plan(b) for b in model.blocks]

    def _plan(self, block) -> dict:
        a1, a2 = block.attn1, block.attn2
        qkv = [a1.to_q, a1.to_k, a1.to_v]
        nbytes = sum(base_linear(m).weight.nbytes for m in qkv)
        grouped = self.options.group_qkv and self.budget.take(nbytes)
        kv_bytes = sum(base_linear(m).weight.nbytes for m in (a2.to_k, a2.to_v))
        return {
            "qkv": Grouped(qkv) if grouped else None,
            "kv2": Grouped([a2.to_k, a2.to_v])
            if self.options.group_qkv and self.budget.take(kv_bytes)
            else None,
        }

    # -- entry point
    def __call__(
        self,
        hidden_states: Tensor,
        timestep: Tensor,
        encoder_hidden_states: Tensor,
        encoder_hidden_states_image: Tensor | None = None,
        return_dict: bool = True,
        attention_kwargs: dict | None = None,
    ):
        args = (hidden_states, timestep, encoder_hidden_states)
        try:
            self._check(hidden_states, timestep, encoder_hidden_states_image, attention_kwargs)
            out = self._forward(*args)
        except Unsupported as why:
            self.fallbacks[str(why)] = self.fallbacks.get(str(why), 0) + 1
            return self.original(
                *args,
                encoder_hidden_states_image=encoder_hidden_states_image,
                return_dict=return_dict,
                attention_kwargs=attention_kwargs,
            )
        self.served += 1
        if not return_dict:
            return (out,)

        return Transformer2DModelOutput(sample=out)

    def _check(self, hidden_states, timestep, image, attention_kwargs) -> None:
        m = self.model
        if image is not None or attention_kwargs or timestep.ndim != 1:
            raise Unsupported("image conditioning, attention kwargs or per-token timesteps")
        if m.gradient_checkpointing and torch.is_grad_enabled():
            raise Unsupported("gradient checkpointing")
        if torch.is_autocast_enabled(hidden_states.device.type):
            raise Unsupported("autocast")
        if hidden_states.dtype != torch.float32 or m.proj_out.weight.dtype != torch.float32:
            raise Unsupported("dtypes other than float32")
        if m._forward_hooks or m._forward_pre_hooks:
            raise Unsupported("hooks on the transformer")
        for b in m.blocks:
            for a in (b.attn1, b.attn2):
                if getattr(a, "fused_projections", False) or a.add_k_proj is not None:
                    raise Unsupported("fused projections or image keys")
                if type(a.processor).__name__ != "WanAttnProcessor" or getattr(
                    a.processor, "_attention_backend", None
                ):
                    raise Unsupported("a custom attention processor")

    # -- the model
    def _forward(self, hidden_states: Tensor, timestep: Tensor, text: Tensor) -> Tensor:
        m = self.model
        b, _, f, h, w = hidden_states.shape
        p_t, p_h, p_w = m.config.patch_size
        rope = self._rope(hidden_states)
        x = m.patch_embedding(hidden_states).flatten(2).transpose(1, 2)  # (B, N, d)
        ce = m.condition_embedder
        temb = ce.time_embedder(ce.timesteps_proj(timestep).to(x.dtype))  # (B, d)
        mod = ce.time_proj(ce.act_fn(temb)).unflatten(1, (6, -1))  # (B, 6, d)
        tables = torch.stack([b.scale_shift_table for b in m.blocks], dim=1)  # (1, L, 6, d)
        mods = (tables + mod.unsqueeze(1)).unsqueeze(3)  # (B, L, 6, 1, d)
        mods[:, :, 1] += 1  # the scales enter as (1 + scale)
        mods[:, :, 4] += 1
        kv, mask = self._text_kv(text)
        for i, block in enumerate(m.blocks):
            x = self._block(i, block, x, mods[:, i].unbind(1), (*kv[i], mask), rope)
        shift, scale = (m.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        x = torch.addcmul(shift, F.layer_norm(x, x.shape[-1:], eps=m.norm_out.eps), 1 + scale)
        x = self._linear(x, m.proj_out)  # (B, N, C·p_t·p_h·p_w)
        x = x.reshape(b, f // p_t, h // p_h, w // p_w, p_t, p_h, p_w, -1)
        return x.permute(0, 7, 1, 4, 2, 5, 3, 6).flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def _rope(self, hidden_states: Tensor):
        key = (*hidden_states.shape[2:], hidden_states.device, self.options.complex_rotary)
        if key not in self.rope:
            if self.options.complex_rotary:
                self.rope[key] = _rope_complex(self.model, hidden_states)
            else:
                self.rope[key] = tuple(t.unsqueeze(2) for t in self.model.rope(hidden_states))
        return self.rope[key]

    def _block(self, i: int, block, x: Tensor, mod: tuple, kv, rope) -> Tensor:
        """One WanTransformerBlock; x (B, N, d); mod: shift, 1 + scale, gate, and the same for
        the feed-forward, (B, 1, d) each; kv: the text keys, values and the attention bias of
        the merged padding slot (or None)."""
        d = x.shape[-1]
        a1, a2 = block.attn1, block.attn2
        shift, scale, gate, c_shift, c_scale, c_gate = mod
        # 1. self-attention, q and k normalised and rotated together
        y = torch.addcmul(shift, F.layer_norm(x, (d,), eps=block.norm1.eps), scale)
        qkv = self._qkv(i, y)  # (B, N, 3d)
        qk, v = qkv.split([2 * d, d], dim=-1)  # split: one gradient copy, not two slices
        qk = F.rms_norm(qk.unflatten(-1, (2, d)), (d,), eps=a1.norm_q.eps)
        qk = qk * torch.stack([a1.norm_q.weight, a1.norm_k.weight])  # (B, N, 2, d)
        qk = qk.unflatten(-1, (a1.heads, -1))  # (B, N, 2, H, hd)
        qk = _rotary(qk, rope) if self.options.complex_rotary else _rotary_stock(qk, *rope)
        q, k = qk.unbind(2)
        v = v.unflatten(-1, (a1.heads, -1))
        x = torch.addcmul(x, self._linear(_attention(q, k, v), a1.to_out[0]), gate)
        # 2. cross-attention on the text
        y = F.layer_norm(x, (d,), block.norm2.weight, block.norm2.bias, block.norm2.eps)
        q = F.rms_norm(self._linear(y, a2.to_q), (d,), a2.norm_q.weight, a2.norm_q.eps)
        k, v = (t.unflatten(-1, (a2.heads, -1)) for t in kv[:2])
        o = _attention(q.unflatten(-1, (a2.heads, -1)), k, v, kv[2])
        x = x + self._linear(o, a2.to_out[0])
        # 3. feed-forward
        y = torch.addcmul(c_shift, F.layer_norm(x, (d,), eps=block.norm3.eps), c_scale)
        ffn = block.ffn.net
        y = F.gelu(self._linear(y, ffn[0].proj), approximate=ffn[0].approximate)
        return torch.addcmul(x, self._linear(y, ffn[2]), c_gate)

    def _linear(self, x: Tensor, module) -> Tensor:
        if not torch.is_grad_enabled() and self.options.merged_inference:
            return self.merged(x, [module])
        if not self.options.lora_ops:
            return module(x)
        lin = base_linear(module)
        terms = lora_terms(module)
        if not terms:
            return F.linear(x, lin.weight, lin.bias)
        x2 = x.reshape(-1, x.shape[-1])
        y = (
            torch.addmm(lin.bias, x2, lin.weight.t())
            if lin.bias is not None
            else x2 @ lin.weight.t()
        )
        return add_terms(x2, y, terms).view(*x.shape[:-1], -1)

    def _qkv(self, i: int, y: Tensor) -> Tensor:
        a1 = self.model.blocks[i].attn1
        group = self.blocks[i]["qkv"]
        if not torch.is_grad_enabled() and self.options.merged_inference:
            return self.merged(y, [a1.to_q, a1.to_k, a1.to_v])
        if group is None or not (self.options.lora_ops and self.options.group_qkv):
            return torch.cat([self._linear(y, m) for m in (a1.to_q, a1.to_k, a1.to_v)], dim=-1)
        return group(y)

    # -- the text side
    def _text_kv(self, text: Tensor) -> tuple[list[tuple[Tensor, Tensor]], Tensor | None]:
        """Per block, the cross-attention keys (normalised) and values, (B, T', d) each, and
        the attention bias that makes the last of them count for the padding they replace."""
        m = self.model
        base = self._cached_base(text)
        ctx = base["ctx"] if base else m.condition_embedder.text_embedder(text)
        out = []
        for i, block in enumerate(m.blocks):
            a2, group = block.attn2, self.blocks[i]["kv2"]
            kv0 = base["kv"][:, i] if base else None
            if not torch.is_grad_enabled() and self.options.merged_inference:
                if kv0 is not None and not (lora_terms(a2.to_k) or lora_terms(a2.to_v)):
                    kv = kv0
                else:
                    kv = self.merged(ctx, [a2.to_k, a2.to_v])
            elif group is not None and self.options.lora_ops and self.options.group_qkv:
                kv = group(ctx, kv0)
            elif kv0 is not None and self.options.lora_ops:
                k0, v0 = kv0.chunk(2, dim=-1)
                kv = torch.cat([_with_terms(ctx, a2.to_k, k0), _with_terms(ctx, a2.to_v, v0)], -1)
            else:
                kv = torch.cat([self._linear(ctx, a2.to_k), self._linear(ctx, a2.to_v)], dim=-1)
            k, v = kv.chunk(2, dim=-1)
            k = F.rms_norm(k, k.shape[-1:], a2.norm_k.weight, a2.norm_k.eps)
            if base and base["index"] is not None:  # from the distinct rows to every position
                k, v = (t.index_select(0, base["index"]).view(*base["shape"], -1) for t in (k, v))
            elif base:
                k, v = (t.view(*base["shape"], -1) for t in (k, v))
            out.append((k, v))
        return out, base["mask"] if base else None

    def cache_text(self, table: Tensor) -> bool:
        """Precompute the frozen text side for these prompt embeddings (N, T, D); later calls
        whose prompts are rows of ``table`` reuse it. Each prompt's trailing padding is stored
        once for all. False when switched off, when it would not fit the memory budget, or when
        the text side is being trained."""
        m = self.model
        self.text = None
        if not self.options.text_cache or not self._text_side_frozen():
            return False
        n, t, _ = table.shape
        lengths = _unpadded_lengths(table)
        full = lengths is None
        lengths = torch.full((n,), t, device=table.device) if full else lengths
        keep = torch.arange(t, device=table.device)[None] < lengths[:, None]  # (N, T)
        rows = table[keep] if full else torch.cat([table[keep], table[:1, -1]])  # (R, D)
        d, layers = m.proj_out.in_features, len(m.blocks)
        if not self.budget.take(len(rows) * d * (1 + 2 * layers) * table.element_size()):
            return False
        with torch.no_grad():
            ctx = m.condition_embedder.text_embedder(rows)  # (R, d)
            kv = torch.stack(
                [
                    torch.cat(
                        [F.linear(ctx, *_wb(b.attn2.to_k)), F.linear(ctx, *_wb(b.attn2.to_v))], -1
                    )
                    for b in m.blocks
                ],
                dim=1,
            )  # (R, L, 2d)
        probe = torch.randn(table[0].numel(), generator=torch.Generator().manual_seed(0))
        probe = probe.to(table.device, table.dtype)
        self.text = {
            "table": table,
            "probe": probe,
            "prints": table.flatten(1) @ probe,  # (N,)
            "ctx": ctx,  # the rows of all prompts, then (unless full) the padding row
            "kv": kv,
            "lengths": lengths,  # (N,)
            "offsets": torch.cumsum(lengths, 0) - lengths,  # (N,) first row of each prompt
            "padded": not full,
            "key": versions(self._text_sources()),
        }
        return True

    def _text_sources(self) -> list[Tensor]:
        m = self.model
        out = list(m.condition_embedder.text_embedder.parameters())
        for b in m.blocks:
            out += list(base_linear(b.attn2.to_k).parameters())
            out += list(base_linear(b.attn2.to_v).parameters())
        return out

    def _text_side_frozen(self) -> bool:
        return not any(p.requires_grad for p in self._text_sources())

    def _cached_base(self, text: Tensor) -> dict | None:
        """Rows of the text cache for these prompts, or None if any prompt is not in it."""
        c = self.text
        if (
            c is None
            or not self.options.text_cache
            or text.shape[1:] != c["table"].shape[1:]
            or text.dtype != c["table"].dtype
        ):
            return None
        if versions(self._text_sources()) != c["key"]:
            self.text = None
            return None
        idx = ((text.flatten(1) @ c["probe"])[:, None] - c["prints"][None]).abs().argmin(1)
        if not torch.equal(c["table"].index_select(0, idx), text):  # exact, never "close"
            return None
        b, t = text.shape[:2]
        lengths = c["lengths"].index_select(0, idx)  # (B,)
        keep = int(lengths.max())
        pos, mask = torch.arange(t, device=text.device), None
        pad_row = len(c["ctx"]) - 1
        if c["padded"] and self.options.merge_padding and keep < t - 1:
            # Positions >= keep hold the same padding vector in every prompt of the batch, so
            # their keys and values are equal: one of them with logit + log(count) stands for all.
            pos = torch.cat([pos[:keep], pos[-1:]])
            mask = torch.zeros(keep + 1, dtype=text.dtype, device=text.device)
            mask[-1] = math.log(t - keep)
        own = pos[None] < lengths[:, None]  # (B, T'): the prompt's own rows, else padding
        rows = torch.where(own, c["offsets"].index_select(0, idx)[:, None] + pos[None], pad_row)
        # Keys and values are computed once per distinct row (a caption twice in the batch, the
        # padding everywhere), then spread to every position that reads them.
        rows, index = rows.flatten(), None
        if self.options.distinct_text_rows:
            rows, index = torch.unique(rows, return_inverse=True)
        return {
            "ctx": c["ctx"].index_select(0, rows),  # (R, d)
            "kv": c["kv"].index_select(0, rows),  # (R, L, 2d)
            "index": index,  # (B·T',) into the R rows, or None when R = B·T'
            "shape": (b, len(pos)),
            "mask": mask,
        }


def _with_terms(x: Tensor, module, base: Tensor) -> Tensor:
    return Grouped([module])(x, base)


def _attention(q: Tensor, k: Tensor, v: Tensor, bias: Tensor | None = None) -> Tensor:
    """Softmax attention over (B, N, H, hd) inputs, ``bias`` (T,) added to the logits of each
    key; returns (B, N, H·hd)."""
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    mask = None if bias is None else bias.view(1, 1, 1, -1)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return o.transpose(1, 2).flatten(2)


def _unpadded_lengths(table: Tensor) -> Tensor | None:
    """Per prompt (N, T, D), the positions before its trailing run of the padding vector
    (the last position's vector, which must be the same in every prompt); None otherwise."""
    pad = table[0, -1]
    if not torch.equal(table[:, -1], pad.expand_as(table[:, -1])):
        return None
    differs = (table != pad).any(-1)  # (N, T)
    t = table.shape[1]
    last = torch.where(differs, torch.arange(t, device=table.device), -1).amax(1)
    return last + 1


def _wb(module) -> tuple[Tensor, Tensor | None]:
    lin = base_linear(module)
    return lin.weight, lin.bias


# ------------------------------------------------------------------------------ switching


def enable(
    transformer, cache_budget: int = CACHE_BUDGET_BYTES, options: FastOptions | None = None
) -> FastForward:
    """Route ``transformer``'s forward through the fast path (idempotent); returns it."""
    current = transformer.__dict__.get("forward")
    if isinstance(current, FastForward):
        return current
    fast = FastForward(transformer, transformer.forward, cache_budget, options)
    transformer.forward = fast
    return fast


def disable(transformer) -> None:
    """Back to the original forward."""
    if isinstance(transformer.__dict__.get("forward"), FastForward):
        del transformer.forward


def get(transformer) -> FastForward | None:
    current = transformer.__dict__.get("forward")
    return current if isinstance(current, FastForward) else None


@contextmanager
def enabled(transformer, cache_budget: int = CACHE_BUDGET_BYTES) -> Iterator[FastForward]:
    """The fast path for the duration of a ``with`` block."""
    was = get(transformer)
    fast = enable(transformer, cache_budget)
    try:
        yield fast
    finally:
        if was is None:
            disable(transformer)


@contextmanager
def pipeline(pipe) -> Iterator[None]:
    """The fast path for a pipeline's transformer(s) during a ``with`` block (generation)."""
    with contextlib.ExitStack() as stack:
        for name in ("transformer", "transformer_2"):
            if getattr(pipe, name, None) is not None:
                stack.enter_context(enabled(getattr(pipe, name)))
        yield
