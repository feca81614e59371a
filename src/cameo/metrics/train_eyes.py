"""``cameo eyes train``: train the identity encoder and attribute probes on world renders.

They learn from the "eyes" split of the world (never shown to the base model) and are tested on
held-out people, whom neither the base model nor the eyes have seen. Renders are blurred and
noised at random during training so the eyes also read the softer frames a diffusion model
draws.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..diffusion import lr_at
from ..world import Figure, Motion, Scene, identity, render
from ..world.traits import BACKGROUND_COLOURS
from .nets import EYES_DIR, PROBE_CLASSES, AttributeProbe, IdentityEncoder, save_net, to_input


@dataclass
class EyesConfig:
    """Settings of ``cameo eyes train``; recorded in the model card."""

    out: str = field(
        default=str(EYES_DIR),
        metadata={"help": "folder for identity.safetensors and probes.safetensors"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the data and initialisation"})
    identities: int = field(
        default=2000, metadata={"help": "eyes-split people to learn identity from"}
    )
    photos_per_identity: int = field(
        default=8, metadata={"help": "rendered photos per person in the bank"}
    )
    wide_photos: int = field(
        default=1500,
        metadata={"help": "64x128 renders (one or two people) for the people-count head"},
    )
    steps: int = field(default=1500, metadata={"help": "optimiser steps"})
    ids_per_batch: int = field(default=32, metadata={"help": "people per identity batch"})
    per_id: int = field(default=4, metadata={"help": "photos per person per batch"})
    probe_batch: int = field(default=64, metadata={"help": "photos per probe batch"})
    lr: float = field(default=2e-3, metadata={"help": "peak learning rate"})
    temperature: float = field(
        default=0.1,
        metadata={"help": "temperature of the supervised contrastive loss (Khosla et al. 2020)"},
    )
    bank: str = field(
        default="runs/eyes-bank.npz",
        metadata={"help": "cache of the rendered training photos (reused if present)"},
    )
    encoder_width: int = field(
        default=16, metadata={"help": "first-stage channels of the identity encoder"}
    )
    probe_width: int = field(default=16, metadata={"help": "first-stage channels of the probe"})
    threads: int = field(default=0, metadata={"help": "torch threads; 0 = default"})
    only: str = field(
        default="",
        metadata={
            "help": "train only 'identity' or only 'probes' (the other net is loaded from --out)"
        },
    )


def random_still(split: str, index: int, rng: random.Random, width: int = 64, two: bool = False):
    """A photo with a random mouth opening and blink, and its labels (for either net)."""
    scene = Scene.sample(rng)
    aspect = width / 64

    def motion(sc: Scene) -> Motion:
        mouth = 0.0 if rng.random() < 0.4 else rng.uniform(0.05, 1.0)
        eye = 1.0 if rng.random() < 0.9 else rng.uniform(0.05, 1.0)
        return Motion([mouth], [eye], [sc.yaw], [sc.pitch], [sc.roll], [0.0], [0.0])

    if two:
        other = rng.randrange(10**6)
        figs = []
        for key, slot in ((index, -aspect / 2), (other, aspect / 2)):
            sc = Scene.sample(rng)
            figs.append(Figure(identity(split, key), sc, motion(sc), slot_x=slot, scale=1.15))
    else:
        slot = rng.uniform(-(aspect - 1), aspect - 1) if width > 64 else 0.0
        figs = [Figure(identity(split, index), scene, motion(scene), slot_x=slot)]
    pix = render(figs, scene, 64, width)[0]
    f = figs[0]
    labels = {
        "hair": -100
        if f.identity.hair_style == "bald"
        else PROBE_CLASSES["hair"].index(f.identity.hair_name),
        "background": BACKGROUND_COLOURS.index(scene.background_name),
        "glasses": PROBE_CLASSES["glasses"].index(f.identity.glasses),
        "hat": PROBE_CLASSES["hat"].index(f.scene.hat),
        "people": len(figs) - 1,
        "mouth": f.motion.mouth_open[0],
        "yaw": f.scene.yaw,
        "pitch": f.scene.pitch,
    }
    return pix, labels


def build_bank(cfg: EyesConfig) -> dict:
    """Render the training photos once: (N, 64, 64, 3) uint8, identity ids and labels; cached
    in ``cfg.bank`` (keyed by the settings that shape it) so a restart does not re-render."""
    key = f"{cfg.seed}-{cfg.identities}-{cfg.photos_per_identity}-{cfg.wide_photos}"
    path = Path(cfg.bank) if cfg.bank else None
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) == key:
                return {
                    "pix": z["pix"],
                    "ids": z["ids"],
                    "labels": json.loads(str(z["labels"])),
                    "wide": z["wide"],
                    "wide_labels": json.loads(str(z["wide_labels"])),
                }
    bank = _render_bank(cfg)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            key=key,
            pix=bank["pix"],
            ids=bank["ids"],
            labels=json.dumps(bank["labels"]),
            wide=bank["wide"],
            wide_labels=json.dumps(bank["wide_labels"]),
        )
    return bank


def _render_bank(cfg: EyesConfig) -> dict:
    rng = random.Random(f"cameo-eyes/{cfg.seed}")
    pix, ids, labels = [], [], []
    for i in tqdm(range(cfg.identities), desc="render eyes bank", dynamic_ncols=True):
        for _ in range(cfg.photos_per_identity):
            p, lab = random_still("eyes", i, rng)
            pix.append(p)
            ids.append(i)
            labels.append(lab)
    wide, wide_labels = [], []
    for j in tqdm(range(cfg.wide_photos), desc="render wide bank", dynamic_ncols=True):
        p, lab = random_still("eyes", 10**6 + j, rng, width=128, two=j % 2 == 0)
        wide.append(p)
        wide_labels.append(lab)
    return {
        "pix": np.stack(pix),
        "ids": np.array(ids),
        "labels": labels,
        "wide": np.stack(wide),
        "wide_labels": wide_labels,
    }


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Blur, noise and a small shift, drawn per batch: the softness of generated frames."""
    sigma = float(torch.rand(1, generator=g)) * 1.3
    if sigma > 0.2:
        k = torch.arange(-2, 3, dtype=torch.float32)
        w = torch.exp(-(k**2) / (2 * sigma**2))
        w = (w / w.sum()).view(1, 1, 1, 5).repeat(3, 1, 1, 1)
        x = F.conv2d(F.pad(x, (2, 2, 0, 0), mode="replicate"), w, groups=3)
        x = F.conv2d(F.pad(x, (0, 0, 2, 2), mode="replicate"), w.transpose(2, 3), groups=3)
    x = x + torch.randn(x.shape, generator=g) * float(torch.rand(1, generator=g)) * 0.06
    dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
    return torch.roll(x, (dy, dx), dims=(2, 3))


def supervised_contrastive(
    emb: torch.Tensor, ids: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Multi-positive InfoNCE over the batch (SupCon, Khosla et al. 2020): emb (N, D) unit rows."""
    sim = emb @ emb.T / temperature
    self_mask = torch.eye(len(ids), dtype=torch.bool)
    sim = sim.masked_fill(self_mask, -1e9)
    log_prob = sim - sim.logsumexp(dim=1, keepdim=True)
    pos = (ids[:, None] == ids[None, :]) & ~self_mask
    return -(log_prob * pos).sum(1).div(pos.sum(1).clamp_min(1)).mean()


def _label_tensor(labels: list[dict], key: str) -> torch.Tensor:
    dtype = torch.long if key in PROBE_CLASSES else torch.float32
    return torch.tensor([lab[key] for lab in labels], dtype=dtype)


def probe_loss(out: dict, labels: list[dict], keys: list[str]) -> torch.Tensor:
    loss = torch.zeros(())
    for k in keys:
        y = _label_tensor(labels, k)
        if k in PROBE_CLASSES:
            if (y != -100).any():
                loss = loss + F.cross_entropy(out[k], y, ignore_index=-100)
        else:
            loss = loss + 4.0 * F.mse_loss(out[k], y)
    return loss


def _identity_loss(
    enc, bank, by_id, cfg: EyesConfig, step: int, g: torch.Generator
) -> torch.Tensor:
    """P people x K photos each; each photo should find its K-1 siblings among the batch."""
    who = torch.randperm(cfg.identities, generator=g)[: cfg.ids_per_batch].tolist()
    rng = np.random.default_rng
    idx = np.concatenate(
        [rng(step * 7919 + w).choice(by_id[w], cfg.per_id, replace=False) for w in who]
    )
    emb = enc(augment(to_input(bank["pix"][idx]), g))
    return supervised_contrastive(emb, torch.as_tensor(bank["ids"][idx]), cfg.temperature)


SINGLE_KEYS = ["hair", "background", "glasses", "hat", "people", "mouth", "yaw", "pitch"]


def _probe_loss(probe, bank, cfg: EyesConfig, g: torch.Generator) -> torch.Tensor:
    """Single photos train every head; wide photos (one or two people) the count and background."""
    pidx = torch.randint(len(bank["pix"]), (cfg.probe_batch,), generator=g).numpy()
    loss = probe_loss(
        probe(augment(to_input(bank["pix"][pidx]), g)),
        [bank["labels"][i] for i in pidx],
        SINGLE_KEYS,
    )
    widx = torch.randint(len(bank["wide"]), (cfg.probe_batch // 4,), generator=g).numpy()
    wout = probe(augment(to_input(bank["wide"][widx]), g))
    return loss + probe_loss(wout, [bank["wide_labels"][i] for i in widx], ["people", "background"])


def train_eyes(cfg: EyesConfig) -> dict:
    """Train the identity encoder and/or the probes (``cfg.only``), validate both on held-out
    people, save weights, the report and a model card."""
    from .nets import load_identity_encoder

    t0 = time.time()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    bank = build_bank(cfg)
    out = Path(cfg.out)
    train_id, train_probe = cfg.only in ("", "identity"), cfg.only in ("", "probes")
    enc = (
        IdentityEncoder(cfg.encoder_width).train()
        if train_id
        else load_identity_encoder(out / "identity.safetensors")
    )
    probe = AttributeProbe(cfg.probe_width).train()
    params = [*(enc.parameters() if train_id else []), *(probe.parameters() if train_probe else [])]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(cfg.seed)
    by_id = [np.flatnonzero(bank["ids"] == i) for i in range(cfg.identities)]
    bar = tqdm(range(cfg.steps), desc=f"eyes {cfg.only or 'both'}", dynamic_ncols=True)
    for step in bar:
        for grp in opt.param_groups:
            grp["lr"] = lr_at(step, cfg.steps, cfg.lr, 50)
        id_loss = _identity_loss(enc, bank, by_id, cfg, step, g) if train_id else torch.zeros(())
        p_loss = _probe_loss(probe, bank, cfg, g) if train_probe else torch.zeros(())
        opt.zero_grad(set_to_none=True)
        (id_loss + p_loss).backward()
        opt.step()
        bar.set_postfix(id=f"{id_loss.item():.3f}", probe=f"{p_loss.item():.3f}")
    enc.eval()
    probe.eval()
    from .validate import validate_eyes

    report = validate_eyes(enc, probe)
    minutes = (time.time() - t0) / 60
    import sys

    card = {
        "config": asdict(cfg),
        "command": " ".join(["cameo", *sys.argv[1:]]),
        "train_minutes": round(minutes, 1),
        "validation": report,
    }
    previous = (
        json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    )
    card["history"] = [
        *(previous.get("history") or ([previous] if previous else [])),
        {k: v for k, v in card.items() if k != "history"},
    ]
    if train_id:
        save_net(enc, out / "identity.safetensors", card)
    if train_probe:
        save_net(probe, out / "probes.safetensors", card)
    (out / "report.json").write_text(json.dumps(card, indent=2))
    write_card(out, card)
    return card


def recalibrate_eyes(
    probe_path: Path, counter_path: Path, out: Path, bank_path: Path, minutes_before: float = 0.0
) -> dict:
    """Ship a BatchNorm probe with its statistics re-estimated on single-person frames (it reads
    per-person 64x64 regions) beside a counter net for the people count on whole canvases;
    validate both with the shipped identity encoder and write weights, report and card."""
    import sys

    from .nets import _load, load_identity_encoder, recalibrate_batchnorm
    from .validate import validate_eyes

    t0 = time.time()
    probe = _load(AttributeProbe, Path(probe_path))
    counter = _load(AttributeProbe, Path(counter_path))
    with np.load(bank_path, allow_pickle=False) as z:
        singles = z["pix"]
    recalibrate_batchnorm(probe, singles)
    enc = load_identity_encoder(out / "identity.safetensors")
    report = validate_eyes(enc, probe, counter)
    out = Path(out)
    previous = (
        json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    )
    card = {
        "config": {**previous.get("config", {}), "only": "recalibrate"},
        "command": " ".join(["cameo", *sys.argv[1:]]),
        "train_minutes": round(minutes_before + (time.time() - t0) / 60, 1),
        "validation": report,
    }
    card["history"] = [
        *(previous.get("history") or ([previous] if previous else [])),
        {k: v for k, v in card.items()},
    ]
    save_net(probe, out / "probes.safetensors", card)
    save_net(counter, out / "people.safetensors", card)
    (out / "report.json").write_text(json.dumps(card, indent=2))
    write_card(out, card)
    return card


def write_card(out: Path, card: dict, command: str | None = None) -> Path:
    """README.md beside the weights: how they were made and how well they see."""
    import platform
    import sys

    v, c = card["validation"], card["config"]
    command = command or " ".join(["cameo", *sys.argv[1:]])
    acc = {k: v[k] for k in v if k.endswith("accuracy") or "accuracy_" in k}
    lines = [
        "# cameo's eyes: identity encoder and attribute probes",
        "",
        'Small CNNs trained by `cameo eyes train` on renders of the procedural world\'s "eyes" split',
        "(people the base model never sees), validated on held-out people nobody trained on.",
        "",
        f"- command: `{command}`",
        f"- seed {c['seed']}, {c['steps']} steps, {c['identities']} people x {c['photos_per_identity']} photos, "
        f"{card['train_minutes']} minutes on {platform.machine()} with {c.get('threads') or 'all'} torch threads",
        "- identity loss: supervised contrastive over P people x K photos per batch (Khosla et al. 2020);",
        "  renders blurred, noised and shifted at random so generated frames are read too",
        "",
        "| held-out check | value | target |",
        "|---|---|---|",
        f"| 1:N identification among {v['people']} people (top-1) | {v['identification_top1']:.3f} | >= 0.98 |",
        f"| verification ROC AUC | {v['verification_auc']:.4f} | >= 0.99 |",
        *[f"| probe {k} | {val:.3f} | >= 0.95 |" for k, val in acc.items()],
        f"| yaw MAE (rad) | {v['yaw_mae_rad']:.3f} | - |",
        f"| mouth-opening MAE | {v['mouth_mae']:.3f} | - |",
        "",
        "Reproduce the table: `cameo eyes train` (retrains and re-validates) or see `docs/measurement.md`.",
        "",
        "## Runs that made the shipped weights",
        "",
        *[
            f"- `{h.get('command', '?')}`: {h.get('config', {}).get('only') or 'both nets'}, "
            f"{h.get('train_minutes')} min{'; ' + h['note'] if h.get('note') else ''}"
            for h in card.get("history", [])
        ],
    ]
    path = Path(out) / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def speaking_threshold() -> float:
    """Mouth-range threshold that separates speech from silence (set from training clips)."""
    path = EYES_DIR / "report.json"
    if path.is_file():
        return float(json.loads(path.read_text())["validation"]["speaking_threshold"])
    return 0.25
