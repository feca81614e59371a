"""Where a pipeline's weights live: the device, the dtype, fp8 storage and offloading.

Everything here is diffusers' own machinery, chosen per case:

- fp8: ``ModelMixin.enable_layerwise_casting`` stores the frozen transformer's linear weights as
  ``float8_e4m3fn`` (1 byte a parameter) and casts each layer to the compute dtype for its own
  forward. Its default skip patterns leave PEFT's ``lora_A``/``lora_B`` alone (they stay fp32
  and trainable) and keep norms, embeddings and the fp32 modules of the model unchanged. It is
  applied after the LoRA is added: on a layer cast before, PEFT would create the adapter in
  float8 (it copies the base layer's dtype).
- generation offload: ``enable_model_cpu_offload`` ("model": each component visits the GPU when
  its turn comes, Wan 2.2's two experts included) or ``enable_group_offload`` ("block": one
  transformer block at a time, prefetched on a CUDA stream; "leaf": one layer at a time).
- training offload: diffusers' ``ModuleGroup`` and ``GroupOffloadingHook`` on groups of the
  frozen weights only. ``apply_group_offloading`` itself cannot train a LoRA: its groups take
  every parameter of a block, the adapter's included, and with streams it restores them from
  CPU copies taken once, so each optimiser update would be overwritten by the next forward;
  its prefetching follows the forward order, which the backward walks in reverse, leaving
  every block on the GPU by the end of the backward. Here the adapter stays on the GPU, each
  group loads synchronously when its block runs (forward or recompute) and leaves after it.
- gradient checkpointing with ``early_stop=False`` whenever weights are cast or offloaded: torch
  stops a block's recomputation at its last saved tensor by default, before the block returns,
  so the hooks that cast a layer back to fp8 or send a block back to the CPU would never run in
  the backward (``tests/test_memory.py`` shows it).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.utils.checkpoint
from diffusers.hooks import HookRegistry
from diffusers.hooks._common import _GO_LC_SUPPORTED_PYTORCH_LAYERS
from diffusers.hooks.group_offloading import (
    _GROUP_OFFLOADING,
    GroupOffloadingConfig,
    GroupOffloadingHook,
    GroupOffloadingType,
    ModuleGroup,
    apply_group_offloading,
)

from .profiles import detect_profile

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OFFLOADS = ("none", "model", "block", "leaf")  # what generation accepts (and "auto")
TRAIN_OFFLOADS = ("none", "block", "leaf")  # the trained transformer must compute on the GPU
FP8 = torch.float8_e4m3fn
CPU = torch.device("cpu")
HEADROOM = 0.8  # share of free GPU memory weights may take in generation ("auto" offload)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"``: the first CUDA device when there is one, else the CPU; anything else as
    torch reads it ("cpu", "cuda", "cuda:1")."""
    if isinstance(device, torch.device):
        return device
    if device in ("", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        out = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"--device {device!r}: {e}") from e
    if out.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: this machine has no CUDA device")
    return out


def resolve_dtype(
    dtype: str | torch.dtype = "auto",
    device: str | torch.device = "cpu",
    base_dir: str | Path | None = None,
) -> torch.dtype:
    """``"auto"``: bf16 for a real Wan base on a GPU (its profile's precision), fp32 on the CPU
    and for cameo-tiny (trained and shipped for fp32 sampling); else "fp32", "bf16", "fp16"."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in ("", "auto"):
        if dtype not in DTYPES:
            raise ValueError(f"--dtype must be auto, {', '.join(DTYPES)}; not {dtype!r}")
        return DTYPES[dtype]
    if resolve_device(device).type == "cpu" or base_dir is None:
        return torch.float32
    return DTYPES.get(detect_profile(base_dir).mixed_precision, torch.float32)


def transformers_of(pipe) -> list[torch.nn.Module]:
    """The pipeline's denoisers: one, or Wan 2.2 A14B's high- and low-noise experts."""
    return [m for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]


def has_hooks(module: torch.nn.Module) -> bool:
    """Whether diffusers (casting, offloading) or accelerate hooks sit anywhere in ``module``:
    then its weights may not be where, or in the dtype, they seem, and code that reads them
    directly (``cameo.models.fast``) must leave the forward to the hooks. (A pipeline call
    leaves an empty diffusers registry on the transformer for its cache contexts: not a hook.)"""
    return any(
        getattr(getattr(m, "_diffusers_hook", None), "hooks", None) or hasattr(m, "_hf_hook")
        for m in module.modules()
    )


def _has_hook(module: torch.nn.Module, name: str) -> bool:
    return any(
        (registry := getattr(m, "_diffusers_hook", None)) is not None
        and registry.get_hook(name) is not None
        for m in module.modules()
    )


def is_offloaded(module: torch.nn.Module) -> bool:
    """Whether group offloading rests some of ``module``'s weights on the CPU: then moving it
    with ``.to(device)`` would undo the offload (and accelerate's ``prepare`` must not place it)."""
    return _has_hook(module, _GROUP_OFFLOADING)


def is_fp8(module: torch.nn.Module) -> bool:
    """Whether ``store_in_fp8`` (diffusers' layerwise casting) is on anywhere in ``module``."""
    return _has_hook(module, "layerwise_casting")


def store_in_fp8(transformer, compute_dtype: torch.dtype | None = None) -> None:
    """The frozen linear weights stored as float8 e4m3 and cast to ``compute_dtype`` (default:
    the model's dtype, bf16 for real Wan) for each layer's forward; diffusers' default skip
    patterns keep norms, embeddings, fp32 modules and the LoRA layers as they are."""
    if is_fp8(transformer):
        return
    compute = compute_dtype or transformer.dtype
    transformer.enable_layerwise_casting(storage_dtype=FP8, compute_dtype=compute)
    # diffusers also stops PEFT from casting a LoRA layer's input to the adapter's dtype, for
    # adapters stored in fp8; ours are never cast (skip patterns), so PEFT's own cast is right,
    # and without it a bf16 input meets fp32 adapter weights wherever autocast is off.
    for m in transformer.modules():
        registry = getattr(m, "_diffusers_hook", None)
        if registry is not None and registry.get_hook("peft_autocast_disable") is not None:
            registry.remove_hook("peft_autocast_disable", recurse=False)


checkpoint_whole_blocks = functools.partial(
    torch.utils.checkpoint.checkpoint, use_reentrant=False, early_stop=False
)
checkpoint_whole_blocks.__doc__ = (
    "Gradient checkpointing whose recomputation runs each block to its end, so that the blocks' "
    "post-forward hooks (cast back to fp8, offload) run in the backward too."
)


def _checkpoint_func(module, *args):
    return checkpoint_whole_blocks(module.__call__, *args)


def _stream(device: torch.device):
    return torch.cuda.Stream(device) if device.type == "cuda" else None


def _group_config(device: torch.device, level: str, stream) -> GroupOffloadingConfig:
    kind = GroupOffloadingType.BLOCK_LEVEL if level == "block" else GroupOffloadingType.LEAF_LEVEL
    return GroupOffloadingConfig(
        onload_device=device,
        offload_device=CPU,
        offload_type=kind,
        non_blocking=False,
        record_stream=False,
        low_cpu_mem_usage=False,
        num_blocks_per_group=1,
        stream=stream,
    )


def offload_frozen(model: torch.nn.Module, device: torch.device, level: str = "block") -> int:
    """Rest ``model``'s frozen weights on the CPU and bring them to ``device`` one group at a
    time (``level`` "block": a transformer block; "leaf": one frozen layer), with diffusers'
    ``GroupOffloadingHook``; everything else (the trainable adapter, embeddings, norms outside
    the groups) moves to ``device`` for good. Transfers use pinned memory on a CUDA stream and
    finish before the group computes (no prefetch: the backward runs the blocks in reverse).
    Returns the number of groups."""
    stream = _stream(device)
    config = _group_config(device, level, stream)
    if level == "block":
        leaders = list(model.blocks)
    else:  # leaf: each frozen layer of a kind diffusers offloads (Linear, Conv, Embedding)
        leaders = [
            m
            for m in model.modules()
            if isinstance(m, _GO_LC_SUPPORTED_PYTORCH_LAYERS)
            and any(True for _ in m.parameters(recurse=False))
            and not any(p.requires_grad for p in m.parameters())
        ]
    grouped: set[int] = set()
    for i, leader in enumerate(leaders):
        frozen = [p for p in leader.parameters() if not p.requires_grad]
        group = ModuleGroup(
            modules=[],  # the frozen tensors only, never the adapter's
            parameters=frozen,
            buffers=list(leader.buffers()),
            offload_device=CPU,
            onload_device=device,
            offload_leader=leader,
            onload_leader=leader,
            stream=stream,
            record_stream=False,
            onload_self=True,
            group_id=f"{level}_{i}",
        )
        group.non_blocking = False  # each load completes before its group computes
        registry = HookRegistry.check_if_exists_or_initialize(leader)
        registry.register_hook(GroupOffloadingHook(group, config=config), _GROUP_OFFLOADING)
        grouped.update(id(t) for t in (*frozen, *leader.buffers()))
    for t in (*model.parameters(), *model.buffers()):
        if id(t) not in grouped:
            t.data = t.data.to(device)
    return len(leaders)


def offload_for_inference(module: torch.nn.Module, device: torch.device, level: str) -> None:
    """diffusers' group offloading of a module that does not train (a generation pipeline's
    transformer or text encoder, Wan 2.2's idle expert): at rest on the CPU, one block (or one
    layer) at a time on ``device``, prefetched on a CUDA stream."""
    kind = "block_level" if level == "block" else "leaf_level"
    cuda = device.type == "cuda"
    apply_group_offloading(
        module,
        onload_device=device,
        offload_device=CPU,
        offload_type=kind,
        num_blocks_per_group=1 if kind == "block_level" else None,
        use_stream=cuda,
    )


def _bytes(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.nbytes for p in module.parameters())


def choose_offload(pipe, device: torch.device) -> str:
    """What "auto" means for generation: nothing on the CPU, no offload; on a GPU, "none" when
    every component fits in 80% of the free memory, "model" when the largest one does (and
    always for Wan 2.2's two experts, each visiting when its steps come), else "block"."""
    if device.type != "cuda":
        return "none"
    free = torch.cuda.mem_get_info(device)[0] * HEADROOM
    parts = [pipe.text_encoder, pipe.vae, *image_encoder(pipe), *transformers_of(pipe)]
    sizes = [_bytes(m) for m in parts]
    if len(transformers_of(pipe)) == 1 and sum(sizes) <= free:
        return "none"
    return "model" if max(sizes) <= free else "block"


def place_pipeline(
    pipe,
    device: str | torch.device = "cpu",
    *,
    fp8: bool = False,
    offload: str = "none",
    expert: str | None = None,
):
    """Put a loaded pipeline where it runs. ``fp8``: the transformers' frozen weights in float8
    (cast on the CPU, before anything moves). ``offload`` (see the module docstring): "none",
    "model", "block", "leaf", or "auto" (``choose_offload``). ``expert`` ("high"/"low", Wan 2.2
    A14B): only that expert is placed so; the other rests on the CPU with block offloading.
    Load any LoRA first: the hooks expect the layers they were attached to."""
    device = resolve_device(device)
    if offload == "auto":
        offload = choose_offload(pipe, device)
    if offload not in OFFLOADS:
        raise ValueError(f"--offload must be auto or one of {', '.join(OFFLOADS)}; not {offload!r}")
    if offload == "model" and device.type == "cpu":
        offload = "none"  # nothing to visit: everything already is where it runs
    models = transformers_of(pipe)
    placed = models if expert is None else [expert_module(pipe, expert)]
    if fp8:
        for m in placed:
            store_in_fp8(m)
    if offload == "none":
        for m in models:
            if m not in placed:
                offload_for_inference(m, device, "block")
        for m in (pipe.text_encoder, pipe.vae, *image_encoder(pipe), *models):
            if not is_offloaded(m):
                m.to(device)
        return pipe
    if offload == "model":
        pipe.enable_model_cpu_offload(device=device)
        return pipe
    for m in models:
        offload_for_inference(m, device, offload if m in placed else "block")
    offload_layers(pipe.text_encoder, device, offload)  # layer by layer: it encodes, then leaves
    for m in (pipe.vae, *image_encoder(pipe)):
        m.to(device)
    return pipe


def image_encoder(pipe) -> list[torch.nn.Module]:
    """Wan 2.1 I2V's CLIP image encoder, as a list: empty for every other base."""
    found = getattr(pipe, "image_encoder", None)
    return [found] if found is not None else []


def expert_module(pipe, expert: str | None) -> torch.nn.Module:
    """Wan 2.2 A14B: "high" is ``transformer`` (steps with t >= boundary), "low" is
    ``transformer_2``; a one-transformer base has only the first."""
    if expert == "low":
        if getattr(pipe, "transformer_2", None) is None:
            raise ValueError("--expert low needs a two-expert base (Wan 2.2 A14B)")
        return pipe.transformer_2
    return pipe.transformer


def place_for_training(
    pipe,  # the pipeline ``model`` belongs to (None: a transformer alone)
    model: torch.nn.Module,
    *,
    device: str | torch.device,
    fp8: bool = False,
    offload: str = "none",
) -> list[str]:
    """Put the transformer being trained (``model``, with its LoRA already added) on
    ``device``: frozen weights in fp8 (``fp8``) and/or offloaded ("block", "leaf"), the adapter
    always on ``device`` in its own dtype. Wan 2.2's other expert rests on the CPU (block
    offloading brings it in for validation previews only); the text encoder and the VAE stay
    where they are (the CPU after ``encoding``). With fp8 or offload, gradient checkpointing is
    switched on with whole-block recomputation, without which neither saves memory in the
    backward. Returns what was done, one line each, for the log."""
    device = resolve_device(device)
    if offload not in TRAIN_OFFLOADS:
        raise ValueError(
            f"--offload for training is one of {', '.join(TRAIN_OFFLOADS)}; not {offload!r}"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("place_for_training: add the LoRA first (no trainable parameter found)")
    notes = []
    if fp8:
        store_in_fp8(model)
        notes.append(f"frozen weights stored in float8 e4m3, computed in {model.dtype}")
    if fp8 or offload != "none":
        model.enable_gradient_checkpointing(_checkpoint_func)
        notes.append("gradient checkpointing on, each block recomputed whole")
    if offload == "none":
        model.to(device)
    else:
        n = offload_frozen(model, device, offload)
        notes.append(f"frozen weights offloaded to the CPU in {n} {offload} groups")
    for other in transformers_of(pipe) if pipe is not None else []:
        if other is not model and not is_offloaded(other):
            offload_for_inference(other, device, "block")
            notes.append("the other expert rests on the CPU (it visits for previews only)")
    return notes


def _largest_block_list(module: torch.nn.Module) -> tuple[torch.nn.Module, str]:
    """The parent of ``module``'s largest ``ModuleList`` (a text encoder's layers) and its name."""
    best, size = (module, ""), -1
    for name, m in module.named_modules():
        for child_name, child in m.named_children():
            if isinstance(child, torch.nn.ModuleList):
                n = sum(p.numel() for p in child.parameters())
                if n > size:
                    best, size = (m, f"{name}.{child_name}".strip(".")), n
    return best


def offload_layers(module: torch.nn.Module, device: torch.device, level: str = "block"):
    """A text encoder computing on ``device`` one layer of its largest layer list at a time
    (diffusers' group offloading on that list's parent); its weights outside that parent
    (BERT's embeddings) move to ``device``. Returns the parent, where the hooks sit."""
    parent, _ = _largest_block_list(module)
    offload_for_inference(parent, device, level)
    inside = {id(p) for p in parent.parameters()}
    for p in module.parameters():
        if id(p) not in inside:
            p.data = p.data.to(device)
    return parent


@contextlib.contextmanager
def streamed(module: torch.nn.Module, device: torch.device, level: str = "block") -> Iterator[None]:
    """``module`` (a text encoder) streamed layer by layer onto ``device`` inside the block
    (``offload_layers``), entirely on the CPU after it, its hooks gone."""
    parent = offload_layers(module, device, level)
    try:
        yield
    finally:
        registry = HookRegistry.check_if_exists_or_initialize(parent)
        for name in (
            _GROUP_OFFLOADING,
            "layer_execution_tracker",
            "lazy_prefetch_group_offloading",
        ):
            registry.remove_hook(name, recurse=True)
        for p in module.parameters():
            p.data = p.data.to(CPU)


@contextlib.contextmanager
def encoding(
    pipe, device: str | torch.device, *, transformer: bool = False, offload: str = "none"
) -> Iterator[None]:
    """The text encoder and the VAE on ``device`` inside the block (caching latents and
    prompts, validation previews), back on the CPU after it, before the transformer arrives;
    with ``offload`` "block" or "leaf" the text encoder streams in layer by layer instead of
    whole (UMT5-XXL: 11.4 GB in bf16). With ``transformer`` the denoisers come too (the base's
    own samples for prior preservation). Modules with placement hooks are left to them."""
    device = resolve_device(device)
    stream_text = offload in ("block", "leaf")
    names = ["vae", "image_encoder", *([] if stream_text else ["text_encoder"])]
    names += ["transformer", "transformer_2"] if transformer else []
    moved = [m for n in names if (m := getattr(pipe, n, None)) is not None and not has_hooks(m)]
    if device.type == "cpu":
        yield
        return
    for m in moved:
        m.to(device)
    try:
        with (
            streamed(pipe.text_encoder, device, offload)
            if stream_text
            else contextlib.nullcontext()
        ):
            yield
    finally:
        for m in moved:
            m.to(CPU)
        torch.cuda.empty_cache()
