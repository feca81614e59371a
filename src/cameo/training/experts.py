"""Both Wan 2.2 A14B experts in one run (``--expert both``).

Wan 2.2 A14B denoises the steps with t >= boundary_ratio * 1000 with ``transformer`` (the
high-noise expert) and the rest with ``transformer_2`` (the low-noise one), as
``WanPipeline.__call__`` routes them. A run that trains both gives each its own LoRA and draws
every step for one of them: the expert with the probability mass of the training sigmas on its
side of the boundary, then the step's sigmas from that distribution restricted to its side. Over
the run the sigmas follow the one-expert distribution exactly, and each step's samples all meet
one expert, so a step computes one 14B transformer, never two.

``TwoExperts`` holds the pair as one module whose forward goes to the expert the timesteps
belong to, so the loss, the loop and prior preservation call one model; its parameter names
(``high.…``, ``low.…``) tell the two adapters apart in checkpoints.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from ..diffusion import shift_sigmas
from ..lora import adapter_state_dict, load_adapter, lora_parameters
from ..lora_files import split_experts_file
from ..models import memory

Tensor = torch.Tensor
SigmaDraw = Callable[[int, torch.Generator], Tensor]  # (batch, generator) -> sigmas (B,)
TIMESTEPS = 1000.0  # training's timestep is sigma * 1000, as the pipeline's scheduler has it
MARGIN = 1e-6  # keeps a float32 sigma on its side of the boundary after rounding


def sigma_cdf(sigma: float, shift: float) -> float:
    """P(s <= sigma) for the training sigmas s of ``diffusion.sample_sigmas``: s is
    shift(sigmoid(u)) with u ~ N(0, 1) and both maps increasing, so it is Phi(logit(unshift))."""
    if sigma <= 0:
        return 0.0
    if sigma >= 1:
        return 1.0
    plain = sigma / (shift - (shift - 1) * sigma)  # the inverse of shift_sigmas
    u = math.log(plain / (1 - plain))
    return 0.5 * (1 + math.erf(u / math.sqrt(2)))


def expert_sigmas(
    batch: int, generator: torch.Generator, *, shift: float, lo: float, hi: float
) -> Tensor:
    """Training sigmas conditioned on [lo, hi]: the logit-normal of ``sample_sigmas`` truncated
    there, drawn by its inverse CDF (u = Phi^-1(Phi(a) + U (Phi(b) - Phi(a))))."""
    a, b = sigma_cdf(lo, shift), sigma_cdf(hi, shift)
    p = a + (b - a) * torch.rand(batch, generator=generator, dtype=torch.float64)
    u = torch.special.ndtri(p)
    sigmas = shift_sigmas(torch.sigmoid(u), shift).float()
    return sigmas.clamp(lo + MARGIN if lo > 0 else 0.0, hi - MARGIN if hi < 1 else 1.0)


class TwoExperts(torch.nn.Module):
    """Wan 2.2 A14B's high- and low-noise experts as one denoiser. A call goes to the expert
    whose side of the boundary its timesteps are on (``WanPipeline``'s rule: t >= boundary ->
    ``high``), and must not mix the sides. With ``place(offload="none")`` on a GPU, the expert
    about to compute brings its frozen weights to the GPU and the other's go to the CPU; the
    adapters stay on the GPU throughout."""

    def __init__(self, high: torch.nn.Module, low: torch.nn.Module, boundary_ratio: float):
        super().__init__()
        self.high, self.low = high, low
        self.boundary_ratio = float(boundary_ratio)
        self.boundary_timestep = self.boundary_ratio * TIMESTEPS
        self._device: torch.device | None = None  # where the visiting expert computes
        self._visiting: torch.nn.Module | None = None

    @property
    def experts(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return self.high, self.low

    @property
    def config(self):  # one architecture: what code sizing the model reads
        return self.high.config

    @property
    def peft_config(self):
        return self.high.peft_config

    def forward(self, hidden_states: Tensor, timestep: Tensor, **kwargs):
        high = timestep >= self.boundary_timestep
        if bool(high.all()):
            expert = self.high
        elif not bool(high.any()):
            expert = self.low
        else:
            raise ValueError(
                f"one call holds timesteps on both sides of the experts' boundary "
                f"({self.boundary_timestep:g}): {timestep.tolist()}"
            )
        return expert(hidden_states=hidden_states, timestep=timestep, **kwargs)

    # ------------------------------------------------- what a transformer offers, for both

    def add_adapter(self, config, adapter_name: str = "default") -> None:
        for m in self.experts:
            m.add_adapter(config, adapter_name=adapter_name)

    def disable_adapters(self) -> None:
        for m in self.experts:
            m.disable_adapters()

    def enable_adapters(self) -> None:
        for m in self.experts:
            m.enable_adapters()

    def enable_gradient_checkpointing(self, *args) -> None:
        for m in self.experts:
            m.enable_gradient_checkpointing(*args)

    def adapter_state_dict(self) -> dict[str, Tensor]:
        """Both adapters under the pipeline's component names: ``transformer.…`` (high) and
        ``transformer_2.…`` (low)."""
        low = adapter_state_dict(self.low)
        return {
            **adapter_state_dict(self.high),
            **{f"transformer_2.{k.removeprefix('transformer.')}": v for k, v in low.items()},
        }

    def load_adapter(self, path: Path, name: str, scratch: Path) -> None:
        """Each half of a two-expert LoRA file into its expert (halves written to ``scratch``)."""
        halves = split_experts_file(path, scratch)
        if halves is None:
            raise ValueError(
                f"{path} adapts one transformer; --expert both starts from a file that holds "
                "both experts (written by --expert both)"
            )
        for m, half in zip(self.experts, halves, strict=True):
            load_adapter(m, half, name)

    # -------------------------------------------------------------------------- the steps

    def high_share(self, shift: float) -> float:
        """The probability mass of the training sigmas on the high expert's side."""
        return 1.0 - sigma_cdf(self.boundary_ratio, shift)

    def sigmas_for_step(self, seed: int, step: int, shift: float) -> SigmaDraw:
        """The sigma draw of ``step``: the expert a pure function of (seed, step) with its
        share of the mass, then sigmas within its side (see the module docstring)."""
        u = random.Random(f"cameo expert {seed} {step}").random()
        lo, hi = (
            (self.boundary_ratio, 1.0) if u < self.high_share(shift) else (0.0, self.boundary_ratio)
        )
        return partial(expert_sigmas, shift=shift, lo=lo, hi=hi)

    # ------------------------------------------------------------------------ placement

    def place(self, device: torch.device, *, fp8: bool, offload: str) -> list[str]:
        """``memory.place_for_training`` for each expert. Offloaded ("block", "leaf"): both
        stream their frozen blocks to ``device`` as they compute. Not offloaded: the adapters
        go to ``device`` and each expert's frozen weights visit it for its own calls (a forward
        pre-hook), the other's resting on the CPU: one expert's weights on the GPU at a time."""
        device = torch.device(device)
        visiting = offload == "none" and device.type != "cpu"
        notes: list[str] = []
        for m in self.experts:
            where = memory.CPU if visiting else device
            notes += memory.place_for_training(None, m, device=where, fp8=fp8, offload=offload)
        if visiting:
            for p in lora_parameters(self):
                p.data = p.data.to(device)
            self._device = device
            for m in self.experts:
                m.register_forward_pre_hook(self._visit)
            notes.append(
                "the two experts take turns on the GPU; the one not computing rests on the CPU"
            )
        return list(dict.fromkeys(notes))

    def _visit(self, module: torch.nn.Module, args) -> None:
        if self._visiting is module:
            return
        for m in self.experts:
            if m is not module:
                _move_frozen(m, memory.CPU)
        _move_frozen(module, self._device)
        self._visiting = module
        if self._device.type == "cuda":
            torch.cuda.empty_cache()


def _move_frozen(module: torch.nn.Module, device: torch.device) -> None:
    """The frozen weights and buffers of ``module`` to ``device``, in place (optimisers and
    hooks keep their tensors); trainable ones stay where they are."""
    with torch.no_grad():
        for t in (*module.parameters(), *module.buffers()):
            if not t.requires_grad and t.device != device:
                t.data = t.data.to(device)


def members(model: torch.nn.Module) -> tuple[torch.nn.Module, ...]:
    """The transformers of a model being trained: two for ``TwoExperts``, else itself."""
    return model.experts if isinstance(model, TwoExperts) else (model,)


def adapter_tensors(model: torch.nn.Module) -> dict[str, Tensor]:
    """The trained adapter(s) as a LoRA file holds them."""
    if isinstance(model, TwoExperts):
        return model.adapter_state_dict()
    return adapter_state_dict(model)
