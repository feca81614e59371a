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


def test_guided_euler_sampling_is_what_the_pipeline_generates(tiny_pipeline_dir):
    """euler_flow_sample over guided_velocity, from the pipeline's own noise and sigmas, lands on
    the latents WanPipeline generates: the denoised decoder stage redraws what generation draws."""
    from cameo.diffusion import euler_flow_sample, guided_velocity
    from cameo.models import encode_prompts, load_pipeline

    pipe = load_pipeline(tiny_pipeline_dir)
    prompt, steps, guidance = "a man with short red hair, speaking", 4, 5.0
    noise = pipe.prepare_latents(
        1, 4, 32, 32, 5, torch.float32, "cpu", torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        drawn = pipe(
            prompt=prompt,
            height=32,
            width=32,
            num_frames=5,
            num_inference_steps=steps,
            guidance_scale=guidance,
            latents=noise.clone(),
            max_sequence_length=64,
            output_type="latent",
        ).frames
        pipe.scheduler.set_timesteps(steps)
        text, empty = encode_prompts(pipe, [prompt]), encode_prompts(pipe, [""])
        ours = euler_flow_sample(
            guided_velocity(pipe.transformer, text, empty, guidance), noise, pipe.scheduler.sigmas
        )
        unguided = euler_flow_sample(
            guided_velocity(pipe.transformer, text, empty, 1.0), noise, pipe.scheduler.sigmas
        )
    torch.testing.assert_close(ours, drawn, rtol=1e-4, atol=1e-4)
    assert (unguided - drawn).abs().max() > 1e-2  # the guidance scale matters
