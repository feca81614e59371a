"""What makes one optimiser step cheap: one flat parameter buffer, fused AdamW, foreach
clipping, and the CPU thread count for small models."""

from __future__ import annotations

import os

import torch
from accelerate.utils import DistributedType

Tensor = torch.Tensor

SMALL_WIDTH = 512  # hidden width up to which CPU training runs on one thread by default


def launched_on_cpus() -> bool:
    """Whether this process is one of several (torchrun, ``accelerate launch``) on a machine
    without a GPU. Accelerate joins such processes into one run (gloo) only when told to use the
    CPU; otherwise each trains alone on all the data, and all of them write the same files."""
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return several and not torch.cuda.is_available()


def cpu_threads(requested: int, transformer) -> int:
    """Torch CPU threads for a training loop: ``requested`` if set, else the user's
    OMP_NUM_THREADS, else 1 for small models, whose operations are too short to share (on the
    2-core machine of docs/performance.md two threads are no faster when the machine is idle
    and 10-40x slower when another job holds a core), else torch's default."""
    if requested > 0:
        return requested
    if os.environ.get("OMP_NUM_THREADS") or not hasattr(transformer, "config"):
        return torch.get_num_threads()
    c = transformer.config
    width = c.num_attention_heads * c.attention_head_dim
    return 1 if width <= SMALL_WIDTH else torch.get_num_threads()


def fused_adamw(params, **kwargs) -> torch.optim.AdamW:
    """AdamW as one fused kernel over all tensors where this torch supports it (CPU and CUDA
    since 2.4), else the foreach implementation."""
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, foreach=True, **kwargs)


def clip_grad_norm_(accelerator, params: list[Tensor], max_norm: float) -> Tensor:
    """``accelerator.clip_grad_norm_`` with torch's multi-tensor (foreach) kernels, which torch
    only picks by itself on GPUs; sharded setups (FSDP, DeepSpeed) keep Accelerate's own."""
    plain = (DistributedType.NO, DistributedType.MULTI_CPU, DistributedType.MULTI_GPU)
    if accelerator.distributed_type not in plain:
        return accelerator.clip_grad_norm_(params, max_norm)
    accelerator.unscale_gradients()
    return torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True)


class FlatParameters:
    """Trainable tensors as views of one flat parameter, and their gradients as views of one flat
    gradient. AdamW, gradient clipping and zeroing then run once over one tensor instead of once
    per tensor (128 of them for the default targets), which on a CPU costs more in dispatch than
    in arithmetic. The maths is the same elementwise; the one difference is that a tensor that
    got no gradient in a step still takes an AdamW step on a zero gradient (per-tensor AdamW
    skips it), which cannot happen when every adapted layer is in the forward.

    Create it after the model has reached its device (moving a module replaces its tensors and
    would cut the views), and zero with ``zero_grad`` (the flat gradient is kept, never None,
    so that autograd accumulates into the views in place). The optimiser state converts to
    and from the per-tensor layout, which is what checkpoints store."""

    def __init__(self, params: list[torch.nn.Parameter]):
        if not params:
            raise ValueError("no trainable tensors to lay out")
        first = params[0]
        if any(p.dtype != first.dtype or p.device != first.device for p in params):
            raise ValueError("trainable tensors of several dtypes or devices")
        self.views = params
        self.sizes = [p.numel() for p in params]
        total = sum(self.sizes)
        self.param = torch.nn.Parameter(torch.empty(total, dtype=first.dtype, device=first.device))
        self.param.grad = torch.zeros_like(self.param)
        with torch.no_grad():
            for p, d in zip(params, self.param.data.split(self.sizes), strict=True):
                d.copy_(p.detach().reshape(-1))
                p.data = d.view_as(p)
                p._cameo_flat = self.param  # for versions: the optimiser writes the buffer
        self.attach_grads()

    def zero_grad(self) -> None:
        self.param.grad.zero_()

    def attach_grads(self) -> None:
        """Point each view's gradient back into the flat gradient (after code that set them
        to None or replaced them)."""
        for p, g in zip(self.views, self.param.grad.split(self.sizes), strict=True):
            p.grad = g.view_as(p)

    def per_tensor_state(self, state: dict) -> dict:
        """A state_dict of an optimiser over ``[self.param]`` as if it ran over the views."""
        flat = state["state"].get(0)
        groups = [{**g, "params": list(range(len(self.views)))} for g in state["param_groups"]]
        if not flat:  # no step taken yet
            return {"state": {}, "param_groups": groups}
        per = {}
        for i, (p, part) in enumerate(zip(self.views, self._parts(flat), strict=True)):
            per[i] = {k: (flat[k] if v is None else v.view_as(p)).clone() for k, v in part}
        return {"state": per, "param_groups": groups}

    def flat_state(self, state: dict) -> dict:
        """The inverse of ``per_tensor_state``; a flat state passes through unchanged."""
        groups = state["param_groups"]
        if len(groups) == 1 and groups[0]["params"] == [0] and len(self.views) != 1:
            return state
        per = state["state"]
        n = len(self.views)
        if len(groups) != 1 or len(groups[0]["params"]) != n:
            raise ValueError(
                f"the optimiser state holds {sum(len(g['params']) for g in groups)} tensors in "
                f"{len(groups)} groups; this adapter trains {n} in one"
            )
        if per and (
            sorted(per) != list(range(n)) or any(per[i].keys() != per[0].keys() for i in per)
        ):
            raise ValueError(
                "the optimiser state covers only some of the adapter's tensors (one never got a "
                "gradient?); resume with --no-fast, or start again"
            )
        flat = {}
        if per:
            first = per[0]
            for k, v in first.items():
                if torch.is_tensor(v) and v.dim() > 0:
                    flat[k] = torch.cat([per[i][k].reshape(-1) for i in range(n)])
                else:
                    flat[k] = v  # the step count, shared by all tensors
        return {"state": {0: flat} if flat else {}, "param_groups": [{**groups[0], "params": [0]}]}

    def _parts(self, flat: dict):
        """Per view: (key, slice of the flat tensor, or None for scalars such as the step)."""
        split = {
            k: v.split(self.sizes) if torch.is_tensor(v) and v.dim() > 0 else None
            for k, v in flat.items()
        }
        return [
            [(k, s[i] if s else None) for k, s in split.items()] for i in range(len(self.views))
        ]
