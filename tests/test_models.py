"""Growing a Wan VAE's decoder wider (models.widen_decoder): same frames at the start, new
channels that learn, and a file that stock diffusers loads."""

import pytest
import torch
from diffusers import AutoencoderKLWan

from cameo.models import VAEConfig, decoder_width, widen_decoder
from conftest import TINY_VAE


def _vae():
    torch.manual_seed(0)
    return VAEConfig(**TINY_VAE).build().eval()


def _latents():
    g = torch.Generator().manual_seed(1)
    return torch.randn(1, TINY_VAE["z_dim"], 3, 4, 4, generator=g)  # (B, C, F, H, W)


def test_widened_decoder_draws_the_same_frames():
    vae, z = _vae(), _latents()
    wide = widen_decoder(vae, 16).eval()
    assert decoder_width(vae) == 8 and decoder_width(wide) == 16
    assert sum(p.numel() for p in wide.decoder.parameters()) > 3 * sum(
        p.numel() for p in vae.decoder.parameters()
    )
    with torch.no_grad():
        before, after = vae.decode(z).sample, wide.decode(z).sample
        silent = widen_decoder(vae, 16, quiet=0.0).decode(z).sample
    # (1, 3, 9, 32, 32); silent new channels reproduce the decoder to rounding, quiet ones
    # (the default, so they can learn) nearly
    torch.testing.assert_close(silent, before, atol=1e-5, rtol=0)
    torch.testing.assert_close(after, before, atol=2e-3, rtol=0)
    assert not torch.equal(after, before)
    for k, v in vae.state_dict().items():  # the encoder, hence every latent, is unchanged
        if k.startswith(("encoder.", "quant_conv.")):
            assert torch.equal(wide.state_dict()[k], v)


def test_new_channels_learn_and_the_file_loads_in_stock_diffusers(tmp_path):
    vae, z = _vae(), _latents()
    wide = widen_decoder(vae, 16)
    target = torch.zeros(1, 3, 9, 32, 32)
    opt = torch.optim.Adam(wide.decoder.parameters(), lr=1e-3)
    key = "decoder.conv_out.weight"  # (3, C, 3, 3, 3): reads the last stage's channels
    assert not wide.state_dict()[key][:, 8:].any()  # new channels are read through zeros
    for _ in range(2):
        loss = ((wide.decode(z).sample - target) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert wide.state_dict()[key][:, 8:].abs().sum() > 0
    wide.save_pretrained(tmp_path / "vae")
    loaded = AutoencoderKLWan.from_pretrained(tmp_path / "vae").eval()
    assert loaded.config.decoder_base_dim == 16
    with torch.no_grad():
        torch.testing.assert_close(loaded.decode(z).sample, wide.eval().decode(z).sample)


def test_narrower_decoder_is_refused():
    with pytest.raises(ValueError, match="narrower"):
        widen_decoder(_vae(), 4)
