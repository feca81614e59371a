"""The given first frame of image-to-video Wan models, encoded exactly as diffusers'
``WanImageToVideoPipeline`` encodes it at generation.

Training reuses the pipeline's own ``prepare_latents`` (the VAE latents of the first frame
followed by zero frames, the 4-channel frame mask, or TI2V-5B's first-frame replacement) and
``encode_image`` (Wan 2.1's CLIP image features), so a LoRA learns on the very inputs it will
see when ``cameo generate --image`` animates a photo. A clip's condition is its first frame; a
photo's is the photo itself (one frame given, nothing left to draw; clips teach the motion),
except for first-frame replacement, where a photo trains as a text-to-image sample (TI2V-5B
is a text-to-video model too).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..diffusion import FirstFrame
from .memory import transformers_of
from .wan import WanImageToVideoPipeline

I2V_PIPELINE = "WanImageToVideoPipeline"


def is_image_to_video(pipe) -> bool:
    """Whether ``pipe`` animates a given first frame (``WanImageToVideoPipeline``)."""
    return isinstance(pipe, WanImageToVideoPipeline)


def replaces_first_frame(pipe) -> bool:
    """TI2V-5B's layout: the first latent frame is replaced, not concatenated."""
    return bool(getattr(pipe.config, "expand_timesteps", False))


def as_image(frame: np.ndarray | Image.Image) -> Image.Image:
    """A uint8 (H, W, 3) frame or a PIL image, as the RGB image the pipeline takes."""
    if isinstance(frame, Image.Image):
        return frame.convert("RGB")
    return Image.fromarray(np.ascontiguousarray(frame)).convert("RGB")


def encode_first_frame(pipe, frames: np.ndarray) -> dict[str, torch.Tensor]:
    """The condition of a training clip (F, H, W, 3) uint8: its first frame, as the pipeline
    encodes it for a clip of F frames at H x W. Returns CPU tensors, each with a batch axis of
    1: ``condition`` and, where the model has them, ``image_embeds``, ``frame_mask`` and
    ``token_mask`` (the fields of ``cameo.diffusion.FirstFrame``)."""
    n, height, width = frames.shape[:3]
    first = as_image(frames[0])
    device = pipe._execution_device
    image = pipe.video_processor.preprocess(first, height=height, width=width)
    image = image.to(device, torch.float32)  # (1, 3, H, W) in [-1, 1]
    z_dim = pipe.vae.config.z_dim
    f_lat = (n - 1) // pipe.vae_scale_factor_temporal + 1
    s = pipe.vae_scale_factor_spatial
    placeholder = torch.zeros(1, z_dim, f_lat, height // s, width // s, device=device)
    with torch.no_grad():
        out = pipe.prepare_latents(
            image, 1, z_dim, height, width, n, torch.float32, device, None, placeholder
        )
        result: dict[str, torch.Tensor] = {}
        if replaces_first_frame(pipe):
            _, condition, mask = out  # (1, C, F', h, w), (1, 1, F', h, w)
            if f_lat == 1:  # a photo: nothing is given, it trains as text-to-image
                condition, mask = torch.zeros_like(condition), torch.ones_like(mask)
            result["frame_mask"] = mask.float().cpu()
            result["token_mask"] = token_mask(pipe, mask).cpu()
        else:
            condition = out[1]  # (1, 4 + C, F', h, w)
        result["condition"] = condition.float().cpu()
        if transformers_of(pipe)[0].config.image_dim is not None:
            result["image_embeds"] = pipe.encode_image(first, device).float().cpu()
    return result


def token_mask(pipe, frame_mask: torch.Tensor) -> torch.Tensor:
    """(B, tokens) per-token timestep scale of first-frame replacement: 0 for the tokens of the
    given frame, as ``WanImageToVideoPipeline`` builds it from the patch grid."""
    _, ph, pw = transformers_of(pipe)[0].config.patch_size
    return frame_mask[:, 0, :, ::ph, ::pw].flatten(1)  # (B, F' * h/ph * w/pw)


def first_frame_batch(items: list[dict[str, torch.Tensor]]) -> FirstFrame:
    """``encode_first_frame`` results of one shape, stacked into one ``FirstFrame``."""

    def stack(key: str) -> torch.Tensor | None:
        return torch.cat([it[key] for it in items]) if key in items[0] else None

    return FirstFrame(
        stack("condition"), stack("image_embeds"), stack("frame_mask"), stack("token_mask")
    )
