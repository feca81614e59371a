"""The adversarial part of the decoder's loss: a small patch discriminator and its hinge loss.

Pixel losses (L1, MSE) pull a decoder towards the mean of what could be in a frame, which
blurs exactly the pale, low-contrast features a face is recognised by. The VAEs of latent
diffusion models add a patch discriminator that judges local texture (Esser et al. 2021,
"Taming Transformers", sec. 3.2; Rombach et al. 2022, LDM, appendix G): hinge losses, a
generator weight set adaptively from the gradients of both losses at the decoder's last layer,
and the adversarial term switched on only after a warm-up, once reconstructions are close.
Here the discriminator reads each frame of a clip on its own (a 2D PatchGAN, Isola et al.
2017), with GroupNorm so that its statistics do not depend on the batch.
"""

from __future__ import annotations

import torch
from torch import nn

Tensor = torch.Tensor


class PatchDiscriminator(nn.Module):
    """Real-or-decoded logits for overlapping patches of every frame.

    ``layers`` 4x4 convolutions doubling the width from ``width`` (all but the last halving H
    and W), then a 1-channel 4x4 output: on a 64x64 frame with 3 layers, a 14x14 grid of
    logits, each seeing a 34-pixel patch."""

    def __init__(self, width: int = 32, layers: int = 3):
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = width
        for i in range(1, layers):
            out = width * min(2**i, 8)
            stride = 2 if i < layers - 1 else 1
            blocks += [nn.Conv2d(ch, out, 4, stride, 1), nn.GroupNorm(8, out), nn.LeakyReLU(0.2)]
            ch = out
        blocks.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, video: Tensor) -> Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> logits (B * F, 1, h, w)."""
        frames = video.transpose(1, 2).flatten(0, 1)  # (B * F, 3, H, W)
        return self.net(frames)


def discriminator_hinge_loss(real: Tensor, fake: Tensor) -> Tensor:
    """The discriminator's hinge loss: real logits pushed above +1, decoded ones below -1."""
    return 0.5 * (torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())


def generator_loss(fake: Tensor) -> Tensor:
    """What the decoder minimises to be taken for real: minus the decoded frames' logits."""
    return -fake.mean()


def adaptive_weight(
    reconstruction: Tensor, adversarial: Tensor, last_layer: Tensor, limit: float = 1e4
) -> Tensor:
    """|grad reconstruction| / |grad adversarial| at the decoder's last layer: scales the
    adversarial term so that neither loss's gradient swamps the other's (LDM's rule)."""
    g_rec = torch.autograd.grad(reconstruction, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(adversarial, last_layer, retain_graph=True)[0]
    return (g_rec.norm() / (g_adv.norm() + 1e-4)).clamp(0.0, limit).detach()
