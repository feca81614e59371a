import torch

from cameo.diffusion import flow_matching_loss, lr_at, noisy_latents, sample_sigmas, shift_sigmas


class Oracle(torch.nn.Module):
    """Predicts the exact velocity for known x0 and noise, or its negative."""

    def __init__(self, x0, noise, sign=1.0):
        super().__init__()
        self.x0, self.noise, self.sign = x0, noise, sign

    def forward(self, hidden_states, timestep, encoder_hidden_states, return_dict=False):
        return (self.sign * (self.noise - self.x0),)


def test_flow_matching_loss_is_zero_for_the_true_velocity_only():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 2, 4, 4, generator=g), torch.randn(3, 4, 2, 4, 4, generator=g)
    sig, text = sample_sigmas(3, 2.0, g), torch.zeros(3, 5, 8)
    assert torch.allclose(
        flow_matching_loss(Oracle(x0, noise), x0, text, sig, noise), torch.zeros(3)
    )
    assert (flow_matching_loss(Oracle(x0, noise, -1.0), x0, text, sig, noise) > 0.1).all()


def test_noisy_latents_endpoints_and_shift():
    x0, n = torch.ones(2, 1, 1, 1, 1), torch.zeros(2, 1, 1, 1, 1)
    out = noisy_latents(x0, n, torch.tensor([0.0, 1.0]))
    assert out.flatten().tolist() == [1.0, 0.0]
    s = torch.linspace(0, 1, 11)
    shifted = shift_sigmas(s, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and (shifted >= s).all()


def test_lr_schedule_warmup_and_cosine():
    assert lr_at(0, 100, 1.0, 10) == 0.1
    assert lr_at(9, 100, 1.0, 10) == 1.0
    assert abs(lr_at(100, 100, 1.0, 10) - 0.1) < 1e-9
    assert lr_at(50, 100, 1.0, 10, "constant") == 1.0
