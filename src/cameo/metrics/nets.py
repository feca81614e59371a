"""cameo's eyes: a face-identity encoder and attribute probes for world renders.

The identity encoder plays the role ArcFace plays for real faces: it maps a 64x64 frame of one
person to a unit vector that is close for the same person whatever the scene. The probes read
what a prompt can state: hair colour, background colour, glasses, hat, mouth opening (speech is
judged from its motion over a clip), head pose and the number of people.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..world.traits import BACKGROUND_COLOURS, GLASSES, HAIR_COLOURS, HATS

EYES_DIR = Path(__file__).resolve().parents[1] / "assets" / "eyes"

# Classification heads of the probe: name -> class names.
PROBE_CLASSES: dict[str, list[str]] = {
    "hair": list(HAIR_COLOURS),
    "background": list(BACKGROUND_COLOURS),
    "glasses": list(GLASSES),
    "hat": list(HATS),
    "people": ["1", "2"],
}
# Regression heads: name -> number of outputs.
PROBE_REGRESSIONS = {"mouth": 1, "yaw": 1, "pitch": 1}


def _norm(kind: str, channels: int) -> nn.Module:
    # GroupNorm has no batch statistics, so inputs of different shapes (64x64 people, 64x128
    # scenes) cannot skew each other's normalisation at evaluation time.
    if kind == "none":
        return nn.Identity()
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(8, channels)


def _block(cin: int, cout: int, norm: str = "batch") -> nn.Sequential:
    bias = norm == "none"
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=bias),
        _norm(norm, cout),
        nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1, bias=bias),
        _norm(norm, cout),
        nn.SiLU(),
    )


class Trunk(nn.Module):
    """Four conv stages, 64x64 -> 4x4, then global average pooling (any width works).

    ``stem_norm=False`` leaves the first stage unnormalised (convolutions with biases): a
    GroupNorm there subtracts each picture's own mean colour, which the colour heads need."""

    def __init__(self, width: int = 32, norm: str = "batch", stem_norm: bool = True):
        super().__init__()
        w = [width, width * 2, width * 4, width * 8]
        self.stages = nn.ModuleList(
            [
                _block(3, w[0], norm if stem_norm else "none"),
                _block(w[0], w[1], norm),
                _block(w[1], w[2], norm),
                _block(w[2], w[3], norm),
            ]
        )
        self.out_dim = w[3]

    def forward(
        self, x: torch.Tensor, pool: bool = True
    ) -> torch.Tensor:  # x (B, 3, H, W) in [-1, 1]
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.stages) - 1:
                x = F.max_pool2d(x, 2)
        return x.mean(dim=(2, 3)) if pool else x  # (B, C) or (B, C, h, w)


class IdentityEncoder(nn.Module):
    """Frame of one person -> unit identity embedding (B, dim)."""

    def __init__(self, width: int = 32, dim: int = 128):
        super().__init__()
        self.config = {"width": width, "dim": dim}
        self.trunk = Trunk(width)
        self.head = nn.Sequential(
            nn.Linear(self.trunk.out_dim, 256), nn.SiLU(), nn.Linear(256, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.trunk(x)), dim=-1)


class AttributeProbe(nn.Module):
    """Frame -> logits per classification head and values per regression head.

    ``pool="avgmax"`` gives the heads the spatial maximum of each feature beside its mean, so a
    small thing anywhere in the frame (a glasses rim, an open mouth) is not averaged away;
    either pooling reads frames of any size."""

    def __init__(
        self, width: int = 24, norm: str = "group", stem_norm: bool = True, pool: str = "avg"
    ):
        super().__init__()
        if pool not in ("avg", "avgmax"):
            raise ValueError(f"pool must be 'avg' or 'avgmax', not {pool!r}")
        self.config = {"width": width, "norm": norm, "stem_norm": stem_norm, "pool": pool}
        self.pool = pool
        self.trunk = Trunk(width, norm, stem_norm)
        d = self.trunk.out_dim * (2 if pool == "avgmax" else 1)
        self.heads = nn.ModuleDict({k: nn.Linear(d, len(v)) for k, v in PROBE_CLASSES.items()})
        self.regs = nn.ModuleDict({k: nn.Linear(d, n) for k, n in PROBE_REGRESSIONS.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.trunk(x, pool=False)
        if self.pool == "avgmax":
            return torch.cat([f.mean(dim=(2, 3)), f.amax(dim=(2, 3))], dim=1)
        return f.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(x)
        out = {k: head(h) for k, head in self.heads.items()}
        out.update({k: reg(h).squeeze(-1) for k, reg in self.regs.items()})
        return out


def save_net(net: nn.Module, path: Path, card: dict) -> None:
    """Weights as fp16 safetensors; the constructor config and a card in the metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: (v.half() if v.is_floating_point() else v).contiguous()
        for k, v in net.state_dict().items()
    }
    save_file(
        tensors, str(path), metadata={"config": json.dumps(net.config), "card": json.dumps(card)}
    )


def _load(cls, path: Path):
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    config = json.loads(meta.get("config", "{}"))
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    if cls is AttributeProbe and "norm" not in config:  # files from before the norm option
        config["norm"] = "batch" if any(k.endswith("running_mean") for k in state) else "group"
    net = cls(**config)
    net.load_state_dict(state)
    return net.eval()


def load_identity_encoder(path: Path | None = None) -> IdentityEncoder:
    path = Path(path or EYES_DIR / "identity.safetensors")
    if not path.is_file():
        raise FileNotFoundError(
            f"identity encoder weights missing at {path}; run `python recipes/train_eyes.py`"
        )
    return _load(IdentityEncoder, path)


def load_people_counter(path: Path | None = None) -> AttributeProbe | None:
    """The net whose "people" head counts people on a whole canvas (any width); None if absent."""
    path = Path(path or EYES_DIR / "people.safetensors")
    return _load(AttributeProbe, path) if path.is_file() else None


def recalibrate_batchnorm(
    net: nn.Module, frames, batches: int = 40, batch: int = 64, seed: int = 0
) -> nn.Module:
    """Re-estimate BatchNorm running statistics on ``frames`` (uint8 (N, H, W, 3)) alone.

    A net trained on batches of two shapes (64x64 people, 64x128 scenes) keeps running
    statistics that mix both; evaluated on one shape it drifts. Averaging the statistics over
    batches of the shape it will read restores what each head saw in training."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    rng = np.random.default_rng(seed)
    net.train()
    with torch.no_grad():
        for _ in range(batches):
            net(to_input(frames[rng.choice(len(frames), batch, replace=False)]))
    return net.eval()


def load_attribute_probe(path: Path | None = None) -> AttributeProbe:
    path = Path(path or EYES_DIR / "probes.safetensors")
    if not path.is_file():
        raise FileNotFoundError(
            f"attribute probe weights missing at {path}; run `python recipes/train_eyes.py`"
        )
    return _load(AttributeProbe, path)


def to_input(frames) -> torch.Tensor:
    """uint8 frames (N, H, W, 3) as numpy or torch -> float (N, 3, H, W) in [-1, 1]."""
    t = torch.as_tensor(frames)
    return t.permute(0, 3, 1, 2).float() / 127.5 - 1.0
