"""cameo: clone a person into a text-to-video diffusion model with LoRA, and measure it."""

__version__ = "0.1.0"
