"""Identity encoders for real photos: any local transformers vision model directory.

cameo's own encoder knows the procedural world. For real faces, point ``--encoder`` at a model
directory you have (a DINOv2 folder gives the DINO metric DreamBooth reports; a face-embedding
ViT gives an ArcFace-like one). Nothing is downloaded: the directory must hold the weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor, AutoModel


class HFImageEncoder:
    """Embeds frames with a transformers vision backbone: pooled output (or the CLS token),
    L2-normalised. Pre-processing follows the directory's image processor when it has one."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} is not a transformers model directory (no config.json)"
            )
        self.model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
        self.device = device
        self.processor = None
        if (path / "preprocessor_config.json").is_file():
            self.processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        cfg = self.model.config
        self.size = int(getattr(cfg, "image_size", 224))

    def _inputs(self, frames: np.ndarray) -> torch.Tensor:
        if self.processor is not None:
            return self.processor(images=list(frames), return_tensors="pt")["pixel_values"]
        x = torch.as_tensor(frames).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 frames (N, H, W, 3) -> unit embeddings (N, D)."""
        out = self.model(pixel_values=self._inputs(frames).to(self.device))
        pooled = getattr(out, "pooler_output", None)
        emb = pooled if pooled is not None else out.last_hidden_state[:, 0]
        return F.normalize(emb.float().cpu(), dim=-1)
