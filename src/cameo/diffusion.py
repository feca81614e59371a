"""The rectified-flow objective, shared by pretraining and LoRA training, and its schedules.

A clean latent x0 and Gaussian noise n are mixed as x_t = (1 - sigma) x0 + sigma n; the
transformer predicts the velocity n - x0 (Lipman et al. 2023, "Flow Matching"; Esser et al.
2024, SD3). Sampling integrates that velocity from sigma = 1 to 0 with the same shifted sigmas,
which diffusers' ``FlowMatchEulerDiscreteScheduler`` implements for generation.
"""

from __future__ import annotations

import itertools
import math

import torch

Tensor = torch.Tensor


def shift_sigmas(s: Tensor, shift: float) -> Tensor:
    """Push sigmas towards noise: sigma = shift*s / (1 + (shift-1)*s) (SD3, eq. 23)."""
    return shift * s / (1 + (shift - 1) * s)


def sample_sigmas(
    batch: int, shift: float, generator: torch.Generator | None = None, device="cpu"
) -> Tensor:
    """Logit-normal training sigmas (SD3's best sampler, sec. 5.1), shifted like the sampler's."""
    u = torch.randn(batch, generator=generator, device=device)
    return shift_sigmas(torch.sigmoid(u), shift)


def noisy_latents(x0: Tensor, noise: Tensor, sigmas: Tensor) -> Tensor:
    """x_t = (1 - sigma) x0 + sigma noise, with sigma broadcast over (B, C, F, H, W)."""
    s = sigmas.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - s) * x0 + s * noise


def flow_matching_loss(
    transformer,
    x0: Tensor,  # (B, C, F, H, W) normalised latents
    text: Tensor,  # (B, T, D) prompt embeddings
    sigmas: Tensor,  # (B,)
    noise: Tensor,  # like x0
    target_velocity: Tensor | None = None,
) -> Tensor:
    """Mean squared velocity error per sample, (B,). ``target_velocity`` replaces n - x0 when a
    teacher's prediction is the target (prior preservation)."""
    xt = noisy_latents(x0, noise, sigmas)
    pred = transformer(
        hidden_states=xt, timestep=sigmas * 1000.0, encoder_hidden_states=text, return_dict=False
    )[0]
    target = noise - x0 if target_velocity is None else target_velocity
    return ((pred.float() - target.float()) ** 2).mean(dim=tuple(range(1, x0.dim())))


def lr_at(step: int, total: int, base_lr: float, warmup: int, schedule: str = "cosine") -> float:
    """Linear warmup, then constant or cosine decay to 10% of the base rate."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if schedule == "constant":
        return base_lr
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def euler_flow_sample(velocity, x: Tensor, sigmas: Tensor) -> Tensor:
    """Integrate the flow from ``sigmas[0]`` down to ``sigmas[-1]`` with Euler steps,
    x <- x + (sigma_next - sigma) * velocity(x, sigma): what diffusers'
    ``FlowMatchEulerDiscreteScheduler.step`` does at each of generation's steps."""
    for sigma, sigma_next in itertools.pairwise(sigmas):
        x = x + (sigma_next - sigma) * velocity(x, sigma)
    return x


def guided_velocity(transformer, text: Tensor, uncond: Tensor, guidance: float):
    """The classifier-free guided velocity v(x, sigma) = v_u + g (v_c - v_u) (Ho & Salimans
    2022) of a Wan transformer, as ``WanPipeline`` forms it; ``text`` and ``uncond`` are (B, T, D)
    prompt and negative-prompt embeddings. Both passes run as one batch of 2B."""

    def velocity(x: Tensor, sigma: Tensor) -> Tensor:
        t = (sigma * 1000.0).expand(2 * len(x))
        v = transformer(
            hidden_states=torch.cat([x, x]),
            timestep=t,
            encoder_hidden_states=torch.cat([text, uncond]),
            return_dict=False,
        )[0].float()
        cond, plain = v.chunk(2)  # (B, C, F, h, w) each
        return plain + guidance * (cond - plain)

    return velocity
