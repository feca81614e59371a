"""LoRA terms of PEFT layers as plain tensors, for the fast path (``cameo.models.fast``).

A PEFT ``Linear`` computes ``W x + b + sum_k s_k B_k A_k x`` over its active adapters; here each
term is read out once (``LoraTerm``) so a group of layers that share their input (q, k, v) runs
as one matrix multiply for the frozen weights and one for the adapters' ``A``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from peft.tuners.lora.layer import Linear

Tensor = torch.Tensor


class Unsupported(Exception):
    """This call needs the original forward."""


# --------------------------------------------------------------------------- LoRA linear


@dataclass
class LoraTerm:
    """One active adapter of one layer: the layer adds scale · (x Aᵀ) Bᵀ."""

    A: Tensor  # (r, k)
    B: Tensor  # (n, r)
    scale: float


_PEFT_LINEAR: list[type] = []


def _peft_linear() -> type:
    if not _PEFT_LINEAR:
        _PEFT_LINEAR.append(Linear)
    return _PEFT_LINEAR[0]


def lora_terms(module: torch.nn.Module) -> list[LoraTerm]:
    """The active LoRA terms of ``module`` (a PEFT ``lora.Linear`` or a plain ``nn.Linear``).
    Called for every layer of every forward, so it reads the submodule tables directly."""
    if type(module) is torch.nn.Linear:
        return []
    if not isinstance(module, _peft_linear()):
        raise Unsupported(f"{type(module).__name__} layers")
    if module._forward_hooks or module._forward_pre_hooks:
        raise Unsupported("hooks on a LoRA layer")
    if module.merged:
        if module.disable_adapters:
            raise Unsupported("a merged adapter that is disabled")
        return []
    if module.disable_adapters:
        return []
    mods = module._modules
    lora_a, lora_b = mods["lora_A"]._modules, mods["lora_B"]._modules
    drops = mods["lora_dropout"]._modules
    terms = []
    for name in module.active_adapters:
        a = lora_a.get(name)
        if a is None:
            continue
        b, drop = lora_b[name], drops[name]
        if name in module.lora_variant or module.fan_in_fan_out:
            raise Unsupported("LoRA variants (DoRA, ...)")
        if b._parameters.get("bias") is not None or (
            type(drop) is not torch.nn.Identity and drop.training and drop.p > 0
        ):
            raise Unsupported("LoRA bias or dropout")
        if a._forward_hooks or b._forward_hooks or a._forward_pre_hooks or b._forward_pre_hooks:
            raise Unsupported("hooks on a LoRA layer")
        weights = (a._parameters["weight"], b._parameters["weight"])
        terms.append(LoraTerm(*weights, float(module.scaling[name])))
    return terms


def add_terms(x2: Tensor, y: Tensor, terms: list[LoraTerm]) -> Tensor:
    """y + Σ s (x Aᵀ) Bᵀ for x (M, k), y (M, n): two matrix multiplies per term, as plain
    differentiable operations, so autograd runs the backward in C++ with no Python."""
    for t in terms:
        y = torch.addmm(y, x2 @ t.A.t(), t.B.t(), alpha=t.scale)
    return y


def base_linear(module: torch.nn.Module) -> torch.nn.Linear:
    """The frozen ``nn.Linear`` under a PEFT layer (or the layer itself)."""
    base = getattr(module, "base_layer", module)
    if not isinstance(base, torch.nn.Linear):
        raise Unsupported(f"{type(base).__name__} base layers")
    return base


def versions(tensors: list[Tensor]) -> tuple:
    """What changes when a tensor is written in place: its own version counter and, for a view
    of a ``FlatParameters`` buffer, the buffer's (the optimiser writes the buffer, and a view
    made through ``.data`` does not share the buffer's counter)."""
    return tuple((id(t), t._version, getattr(t, "_cameo_flat", t)._version) for t in tensors)


class Grouped:
    """Linear layers that read the same input, run as one: the frozen weights concatenated
    (a copy, rebuilt if a weight changes in place), and when every layer has one alike LoRA
    term (q, k and v of one adapter) all of them in one more matmul plus one batched matmul."""

    def __init__(self, modules: list[torch.nn.Module]):
        self.modules = modules
        self.sizes = [base_linear(m).out_features for m in modules]
        self.weight: Tensor | None = None
        self.bias: Tensor | None = None
        self.key: tuple = ()

    def frozen(self) -> tuple[Tensor, Tensor | None]:
        bases = [base_linear(m) for m in self.modules]
        if len(bases) == 1:
            return bases[0].weight, bases[0].bias
        key = versions([t for b in bases for t in (b.weight, b.bias) if t is not None])
        if key != self.key:
            self.weight, self.bias = _concat(bases)
            self.key = key
        return self.weight, self.bias

    def __call__(self, x: Tensor, base: Tensor | None = None) -> Tensor:
        """x (..., k) -> (..., Σ n); ``base`` (..., Σ n) replaces x Wᵀ + b when it is cached."""
        x2 = x.reshape(-1, x.shape[-1])
        if base is None:
            weight, bias = self.frozen()
            y = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
        else:
            y = base.reshape(x2.shape[0], -1)
        per = [lora_terms(m) for m in self.modules]
        if any(per):
            y = self._lora(x2, y, per)
        return y.view(*x.shape[:-1], y.shape[-1])

    def _lora(self, x2: Tensor, y: Tensor, per: list[list[LoraTerm]]) -> Tensor:
        shapes = {(p[0].A.shape, p[0].B.shape, p[0].scale) for p in per if len(p) == 1}
        if len(per) == 1 or len(shapes) != 1 or any(len(p) != 1 for p in per):
            parts = y.split(self.sizes, dim=1) if len(per) > 1 else [y]
            parts = [add_terms(x2, o, p) for o, p in zip(parts, per, strict=True)]
            return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        terms = [p[0] for p in per]
        (r, _), (n, _), s = terms[0].A.shape, terms[0].B.shape, terms[0].scale
        m, g = x2.shape[0], len(terms)
        u = x2 @ torch.cat([t.A for t in terms]).t()  # (M, G·r)
        bt = torch.stack([t.B for t in terms]).transpose(1, 2)  # (G, r, n)
        delta = torch.bmm(u.view(m, g, r).transpose(0, 1), bt)  # (G, M, n)
        return torch.add(y.view(m, g, n), delta.transpose(0, 1), alpha=s).reshape(m, g * n)


class Budget:
    """Bytes of extra memory the fast path may still take (grouped weights, caches)."""

    def __init__(self, total: int):
        self.left = total

    def take(self, nbytes: int) -> bool:
        if nbytes > self.left:
            return False
        self.left -= nbytes
        return True


class MergedCache:
    """Inference: per group of layers, the concatenated W + Σ s B A, rebuilt when a weight or
    a scale changes. Past the memory budget it multiplies the factors instead."""

    def __init__(self, budget: Budget):
        self.budget = budget
        self.entries: dict[tuple, tuple[tuple, Tensor, Tensor | None]] = {}

    def __call__(self, x: Tensor, modules: list[torch.nn.Module]) -> Tensor:
        bases = [base_linear(m) for m in modules]
        per = [lora_terms(m) for m in modules]
        if len(modules) == 1 and not per[0]:
            return F.linear(x, bases[0].weight, bases[0].bias)
        ident = tuple(id(m) for m in modules)
        tensors = [t for lin in bases for t in (lin.weight, lin.bias) if t is not None]
        factors = [m for p in per for t in p for m in (t.A, t.B)]
        key = (versions([*tensors, *factors]), *(t.scale for p in per for t in p))
        hit = self.entries.get(ident)
        if hit is None and not self.budget.take(sum(lin.weight.nbytes for lin in bases)):
            return Grouped(modules)(x)
        if hit is None or hit[0] != key:
            with torch.no_grad():
                weight, bias = _concat(bases)
                weight = weight.clone() if len(bases) == 1 else weight
                for rows, p in zip(weight.split([b.out_features for b in bases]), per, strict=True):
                    for t in p:
                        rows.addmm_(t.B, t.A, alpha=t.scale)
            hit = self.entries[ident] = (key, weight, bias)
        return F.linear(x, hit[1], hit[2])


def _concat(bases: list[torch.nn.Linear]) -> tuple[Tensor, Tensor | None]:
    if len(bases) == 1:
        return bases[0].weight, bases[0].bias
    if len({b.bias is None for b in bases}) > 1:
        raise Unsupported("grouped layers with and without bias")
    with torch.no_grad():
        weight = torch.cat([b.weight for b in bases])
        bias = None if bases[0].bias is None else torch.cat([b.bias for b in bases])
    return weight, bias
