"""An exponential moving average of parameters, for the LoRA trainer and the pretraining stages.

After optimiser step ``s`` each average moves towards its parameter with the decay

    d(s) = min(decay, (1 + s) / (10 + s)),

so that the first steps, whose weights are soon left behind, do not linger in the average
(the warm-up of diffusers' ``EMAModel``; with decay 0.999 it reaches the full decay after
about 9,000 steps). The average lives beside the weights, on their device and in their
dtype, and is checkpointed with them under ``ema::<i>``, so a resumed run averages as an
uninterrupted one does.
"""

from __future__ import annotations

import torch
from torch import Tensor

PREFIX = "ema::"


class ParameterEMA:
    """A moving average of ``params`` (in order) with the given ``decay`` (0 < decay < 1)."""

    def __init__(self, params: list[Tensor], decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"an EMA decay must be in (0, 1), not {decay}")
        self.params, self.decay = list(params), decay
        self.averages = [p.detach().clone() for p in self.params]

    def decay_at(self, step: int) -> float:
        """The decay applied after optimiser step ``step`` (0-based)."""
        return min(self.decay, (1 + step) / (10 + step))

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Move every average towards its parameter (after optimiser step ``step``)."""
        d = self.decay_at(step)
        for avg, p in zip(self.averages, self.params, strict=True):
            avg.lerp_(p.detach(), 1 - d)

    def tensors(self) -> dict[str, Tensor]:
        """The averages by checkpoint key (``ema::0``, ``ema::1``, ...)."""
        return {f"{PREFIX}{i}": avg for i, avg in enumerate(self.averages)}

    @torch.no_grad()
    def load(self, tensors: dict[str, Tensor]) -> bool:
        """Restore the averages from a checkpoint's tensors; False (and the averages left as
        they are) when the checkpoint holds none, e.g. one written without an EMA."""
        keys = list(self.tensors())
        if not all(k in tensors for k in keys):
            return False
        for avg, k in zip(self.averages, keys, strict=True):
            avg.copy_(tensors[k])
        return True

    @torch.no_grad()
    def copy_to(self, params: list[Tensor] | None = None) -> None:
        """Write the averages into ``params`` (default: the averaged parameters themselves),
        in place, so that modules and caches holding them see the new values."""
        for avg, p in zip(self.averages, params or self.params, strict=True):
            p.copy_(avg)


def without_averages(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """A checkpoint's tensors less the EMA's."""
    return {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}
