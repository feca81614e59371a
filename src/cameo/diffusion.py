"""The rectified-flow objective, shared by pretraining and LoRA training, and its schedules.

A clean latent x0 and Gaussian noise n are mixed as x_t = (1 - sigma) x0 + sigma n; the
transformer predicts the velocity n - x0 (Lipman et al. 2023, "Flow Matching"; Esser et al.
2024, SD3). Sampling integrates that velocity from sigma = 1 to 0 with the same shifted sigmas,
which diffusers' ``FlowMatchEulerDiscreteScheduler`` implements for generation.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields

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


def min_snr_weights(sigmas: Tensor, gamma: float) -> Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023) for the velocity loss, (B,); ones when
    ``gamma`` is 0.

    x_t = (1 - s) x0 + s n has SNR (1 - s)^2 / s^2, and the x0 error is s times the velocity
    error, so the paper's weight min(SNR, gamma) on the x0 error is s^2 min(SNR, gamma) =
    min((1 - s)^2, gamma s^2) on the velocity error. Divided by its value at s = 0.5 (0.25 for
    gamma >= 1), so the middle of the noise range keeps weight 1 and both ends weigh less."""
    if gamma <= 0:
        return torch.ones_like(sigmas)
    s = sigmas.float()
    return torch.minimum((1 - s) ** 2, gamma * s**2) / min(0.25, gamma * 0.25)


def noisy_latents(x0: Tensor, noise: Tensor, sigmas: Tensor) -> Tensor:
    """x_t = (1 - sigma) x0 + sigma noise, with sigma broadcast over (B, C, F, H, W)."""
    s = sigmas.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - s) * x0 + s * noise


@dataclass
class FirstFrame:
    """What an image-to-video Wan transformer reads beside the noisy latents: the given first
    frame, encoded as diffusers' ``WanImageToVideoPipeline`` encodes it
    (``cameo.models.first_frame``). Two layouts exist:

    - channel concatenation (Wan 2.1 I2V, Wan 2.2 I2V A14B, cameo-tiny-i2v): ``condition`` is
      (B, 4 + C, F, h, w), a 4-channel mask (1 on the given frame) and the latents of the first
      frame followed by zeros; the transformer reads ``cat([x_t, condition])``.
    - first-frame replacement (Wan 2.2 TI2V-5B, ``expand_timesteps``): ``condition`` is the
      clean first-frame latents (B, C, F, h, w); ``frame_mask`` (B, 1, F, h, w) is 0 on the
      given frame, where the input is the condition itself at timestep 0 (``token_mask``,
      (B, tokens), scales each token's timestep), and the loss leaves that frame out.
    """

    condition: Tensor
    image_embeds: Tensor | None = None  # (B, N, D) CLIP image features (Wan 2.1 I2V)
    frame_mask: Tensor | None = None  # first-frame replacement only
    token_mask: Tensor | None = None

    def _tensors(self) -> tuple[Tensor | None, ...]:
        """The fields in order (not ``dataclasses.astuple``, which would copy every tensor)."""
        return tuple(getattr(self, f.name) for f in fields(self))

    def select(self, rows: Tensor | slice) -> FirstFrame:
        """The rows ``rows`` of every tensor (a batch's samples)."""
        return FirstFrame(*(None if t is None else t[rows] for t in self._tensors()))

    def to(self, device: torch.device | str) -> FirstFrame:
        return FirstFrame(*(None if t is None else t.to(device) for t in self._tensors()))

    def cat(self, other: FirstFrame) -> FirstFrame:
        """Both batches, one after the other along the batch axis."""
        pairs = zip(self._tensors(), other._tensors(), strict=True)
        return FirstFrame(*(None if a is None else torch.cat([a, b]) for a, b in pairs))


def transformer_inputs(xt: Tensor, sigmas: Tensor, first: FirstFrame | None = None) -> dict:
    """The keyword arguments of a Wan transformer call for noisy latents ``xt`` (B, C, F, h, w)
    at ``sigmas`` (B,), conditioned on ``first`` when the model is image-to-video: what
    ``WanImageToVideoPipeline`` passes at each denoising step."""
    timestep = sigmas * 1000.0
    if first is None:
        return {"hidden_states": xt, "timestep": timestep}
    if first.frame_mask is None:  # channel concatenation
        hidden = torch.cat([xt, first.condition.to(xt.dtype)], dim=1)
    else:  # the given frame replaces the noisy one and is read at timestep 0
        m = first.frame_mask.to(xt.dtype)
        hidden = (1 - m) * first.condition.to(xt.dtype) + m * xt
        timestep = first.token_mask.to(timestep.dtype) * timestep[:, None]  # (B, tokens)
    out = {"hidden_states": hidden, "timestep": timestep}
    if first.image_embeds is not None:
        out["encoder_hidden_states_image"] = first.image_embeds
    return out


def flow_matching_loss(
    transformer,
    x0: Tensor,  # (B, C, F, H, W) normalised latents
    text: Tensor,  # (B, T, D) prompt embeddings
    sigmas: Tensor,  # (B,)
    noise: Tensor,  # like x0
    target_velocity: Tensor | None = None,
    first: FirstFrame | None = None,
    min_snr_gamma: float = 0.0,
) -> Tensor:
    """Mean squared velocity error per sample, (B,). ``target_velocity`` replaces n - x0 when a
    teacher's prediction is the target (prior preservation). ``first``: the given first frame
    of an image-to-video model (``FirstFrame``). ``min_snr_gamma`` > 0 weighs each sample by
    ``min_snr_weights``."""
    xt = noisy_latents(x0, noise, sigmas)
    inputs = transformer_inputs(xt, sigmas, first)
    pred = transformer(**inputs, encoder_hidden_states=text, return_dict=False)[0]
    target = noise - x0 if target_velocity is None else target_velocity
    err = (pred.float() - target.float()) ** 2  # (B, C, F, H, W)
    if first is not None and first.frame_mask is not None:  # the given frame is not predicted
        m = first.frame_mask.float().expand_as(err)
        per = (err * m).sum(dim=tuple(range(1, x0.dim()))) / m.sum(dim=tuple(range(1, x0.dim())))
    else:
        per = err.mean(dim=tuple(range(1, x0.dim())))
    return per * min_snr_weights(sigmas, min_snr_gamma) if min_snr_gamma > 0 else per


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
