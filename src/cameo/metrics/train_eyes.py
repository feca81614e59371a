"""What training cameo's eyes is made of: its settings, the rendered photo bank, augmentation
and losses, and how finished weights ship (report, card, BatchNorm recalibration).

The eyes (identity encoder and attribute probes) learn from the "eyes" split of the world (never
shown to the base model) and are tested on held-out people, whom neither the base model nor the
eyes have seen. Renders are blurred and noised at random during training so the eyes also read
the softer frames a diffusion model draws. The optimisation loop that puts these together is the
recipe ``recipes/train_eyes.py``.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from .nets import (
    EYES_DIR,
    PROBE_CLASSES,
    PROBE_REGRESSIONS,
    AttributeProbe,
    IdentityEncoder,
    load_attribute_probe,
    load_identity_encoder,
    recalibrate_batchnorm,
    save_net,
    to_input,
)
from .stills import random_still
from .validate import validate_eyes


@dataclass
class EyesConfig:
    """Settings of the eyes' training (``recipes/train_eyes.py``); recorded in the model card."""

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
    probe_width: int = field(default=24, metadata={"help": "first-stage channels of the probe"})
    probe_norm: str = field(
        default="group",
        metadata={"help": "normalisation of the probe: 'group' (no batch statistics) or 'batch'"},
    )
    probe_stem_norm: bool = field(
        default=False,
        metadata={"help": "normalise the probe's first stage too (it then loses absolute colour)"},
    )
    probe_pool: str = field(
        default="avgmax",
        metadata={"help": "probe pooling: 'avg', or 'avgmax' (mean and maximum of each feature)"},
    )
    wide_batch: int = field(
        default=0,
        metadata={"help": "64x128 photos per probe batch; 0 = a quarter of --probe-batch"},
    )
    class_balance: float = field(
        default=0.5,
        metadata={
            "help": "probe class weights are frequency^-this (0 = unweighted, 1 = fully balanced)"
        },
    )
    head_weights: str = field(
        default="mouth=8,yaw=16,pitch=4",
        metadata={
            "help": "probe loss weight per head, NAME=W,... (unnamed classes 1, regressions 4)"
        },
    )
    checkpoint: str = field(
        default="",
        metadata={
            "help": "folder for training checkpoints, saved every --checkpoint-every steps; a run "
            "with the same settings resumes from the newest"
        },
    )
    checkpoint_every: int = field(default=100, metadata={"help": "steps between checkpoints"})
    note: str = field(default="", metadata={"help": "a line for the model card about this run"})
    threads: int = field(default=0, metadata={"help": "torch threads; 0 = default"})
    only: str = field(
        default="",
        metadata={
            "help": "train only 'identity' or only 'probes' (the other net is loaded from --out)"
        },
    )


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


def parse_head_weights(text: str) -> dict[str, float]:
    """``"mouth=4,yaw=8"`` -> ``{"mouth": 4.0, "yaw": 8.0}`` (heads of the probe only)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in PROBE_CLASSES and name not in PROBE_REGRESSIONS:
            raise ValueError(f"unknown probe head {name!r} in head weights {text!r}")
        out[name] = float(value)
    return out


def class_weights(labels: list[dict], power: float) -> dict[str, torch.Tensor]:
    """Per classification head, weights frequency^-power, scaled so that their mean over the
    labels is 1 (power 0: all ones). Rare classes (top hats, pink hair) then count for more.

    A class absent from ``labels`` is weighed as if seen once (and the scaling counts it so).
    The bank's single photos never show two people, so with power > 0 the "2" of the people
    head weighs about sqrt(N) and the two-person canvases of a wide batch dominate that head's
    loss there; the shipped probe was trained so (its wide count: 0.995 held out)."""
    out = {}
    for k, names in PROBE_CLASSES.items():
        y = np.array([lab[k] for lab in labels])
        counts = np.bincount(y[y != -100], minlength=len(names)).astype(np.float64)
        freq = np.maximum(counts, 1.0) / max(counts.sum(), 1.0)
        w = freq**-power
        w = w / (freq * w).sum()
        out[k] = torch.tensor(w, dtype=torch.float32)
    return out


def probe_loss(
    out: dict,
    labels: list[dict],
    keys: list[str],
    weights: dict[str, float] | None = None,
    balance: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Cross-entropy per class head (optionally class-weighted by ``balance``), MSE per
    regression head, summed with ``weights`` per head (default: regressions 4, classes 1)."""
    loss = torch.zeros(())
    for k in keys:
        y = _label_tensor(labels, k)
        if k in PROBE_CLASSES:
            w = (weights or {}).get(k, 1.0)
            if (y != -100).any():
                cw = balance.get(k) if balance else None
                loss = loss + w * F.cross_entropy(out[k], y, weight=cw, ignore_index=-100)
        else:
            loss = loss + (weights or {}).get(k, 4.0) * F.mse_loss(out[k], y)
    return loss


def identity_batch_loss(
    enc: IdentityEncoder, bank: dict, by_id: list, cfg: EyesConfig, step: int, g: torch.Generator
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


def probe_batch_loss(
    probe: AttributeProbe,
    bank: dict,
    cfg: EyesConfig,
    g: torch.Generator,
    weights: dict[str, float] | None = None,
    balance: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Single photos train every head; wide photos (one or two people) the count and background."""
    cl = torch.channels_last
    pidx = torch.randint(len(bank["pix"]), (cfg.probe_batch,), generator=g).numpy()
    x = augment(to_input(bank["pix"][pidx]), g).contiguous(memory_format=cl)
    loss = probe_loss(probe(x), [bank["labels"][i] for i in pidx], SINGLE_KEYS, weights, balance)
    wide_n = cfg.wide_batch or cfg.probe_batch // 4
    widx = torch.randint(len(bank["wide"]), (wide_n,), generator=g).numpy()
    wout = probe(augment(to_input(bank["wide"][widx]), g).contiguous(memory_format=cl))
    wlab = [bank["wide_labels"][i] for i in widx]
    return loss + probe_loss(wout, wlab, ["people", "background"], weights, balance)


# Settings that do not change what a run computes (a checkpoint resumes across them).
RESUMABLE = ("threads", "checkpoint", "checkpoint_every", "note", "out")


def run_settings(cfg: EyesConfig) -> dict:
    """The settings that shape what a run computes: a checkpoint resumes only under the same."""
    return {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE}


def previous_report(out: Path) -> dict:
    """The report.json of the eyes in ``out``, or {}."""
    path = Path(out) / "report.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def ship_eyes(out: Path, card: dict, nets: dict[str, nn.Module]) -> dict:
    """Append ``card`` to the runs recorded in ``out``/report.json, then write ``nets`` (file
    name -> net, the card in each file's metadata), report.json and the README card. Returns
    the card with its history."""
    out = Path(out)
    previous = previous_report(out)
    card = {
        **card,
        "history": [
            *(previous.get("history") or ([previous] if previous else [])),
            {k: v for k, v in card.items() if k != "history"},
        ],
    }
    for name, net in nets.items():
        save_net(net, out / name, card)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(card, indent=2))
    write_card(out, card)
    return card


def machine_description(threads: int = 0) -> str:
    """CPU model, core count and torch threads: where a run's minutes were spent."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{model} ({platform.machine()}), {os.cpu_count()} cores, "
        f"{threads or torch.get_num_threads()} torch thread(s)"
    )


def recalibrate_eyes(
    probe_path: Path,
    counter_path: Path,
    out: Path,
    bank_path: Path,
    minutes_before: float = 0.0,
    command: str | None = None,
) -> dict:
    """Ship a BatchNorm probe with its statistics re-estimated on single-person frames (it reads
    per-person 64x64 regions) beside a counter net for the people count on whole canvases;
    validate both with the shipped identity encoder and write weights, report and card.
    ``command``: the command line recorded in the card (default: this process's, as ``cameo``)."""
    t0 = time.time()
    out = Path(out)
    probe = load_attribute_probe(Path(probe_path))
    counter = load_attribute_probe(Path(counter_path))
    with np.load(bank_path, allow_pickle=False) as z:
        singles = z["pix"]
    recalibrate_batchnorm(probe, singles)
    enc = load_identity_encoder(out / "identity.safetensors")
    report = validate_eyes(enc, probe, counter)
    card = {
        "config": {**previous_report(out).get("config", {}), "only": "recalibrate"},
        "command": command or shlex.join(["cameo", *sys.argv[1:]]),
        "train_minutes": round(minutes_before + (time.time() - t0) / 60, 1),
        "validation": report,
    }
    return ship_eyes(out, card, {"probes.safetensors": probe, "people.safetensors": counter})


def _made(entry: dict, net: str) -> bool:
    """Did this run (a history entry) write ``net`` ('identity' or 'probes')?"""
    only = (entry.get("config") or {}).get("only") or ""
    return only in ("", net) or (net == "probes" and only == "recalibrate")


def _run_line(h: dict) -> str:
    c = h.get("config") or {}
    what = c.get("only") or "both nets"
    parts = [f"`{h.get('command', '?')}`: {what}, seed {c.get('seed')}"]
    if c.get("only") != "recalibrate":
        parts.append(
            f"{c.get('steps')} steps, {c.get('identities')} people x "
            f"{c.get('photos_per_identity')} photos + {c.get('wide_photos')} wide"
        )
    parts.append(f"{h.get('train_minutes')} min")
    if h.get("machine"):
        parts.append(f"on {h['machine']}")
    return ", ".join(parts) + (f"; {h['note']}" if h.get("note") else "")


def write_card(out: Path, card: dict, command: str | None = None) -> Path:
    """README.md beside the weights: which run made each file, and how well they see."""
    v = card["validation"]
    command = command or card.get("command") or "?"
    acc = {k: v[k] for k in v if k.endswith("accuracy") or "accuracy_" in k}
    history = card.get("history") or [card]
    origin = {
        net: next((h for h in reversed(history) if _made(h, net)), None)
        for net in ("identity", "probes")
    }
    counter = (Path(out) / "people.safetensors").is_file()
    lines = [
        "# cameo's eyes: identity encoder and attribute probes",
        "",
        'Small CNNs trained by `recipes/train_eyes.py` on renders of the procedural world\'s "eyes" split',
        "(people the base model never sees), validated on held-out people nobody trained on.",
        "",
        f"- latest command: `{command}`",
        "- identity loss: supervised contrastive over P people x K photos per batch (Khosla et al. 2020);",
        "  renders blurred, noised and shifted at random so generated frames are read too",
        "",
        "## Which run made each file",
        "",
    ]
    for net, name in (("identity", "identity.safetensors"), ("probes", "probes.safetensors")):
        h = origin[net]
        lines.append(f"- {name}: " + (_run_line(h) if h else "unknown"))
        if net == "probes" and h:
            c = h.get("config") or {}
            if c.get("only") != "recalibrate":
                lines.append(
                    f"  (width {c.get('probe_width')}, {c.get('probe_norm', 'batch')} norm"
                    + (
                        ""
                        if c.get("probe_stem_norm", True)
                        else " after an unnormalised first stage"
                    )
                    + f", {c.get('probe_pool', 'avg')} pooling, "
                    f"class balance {c.get('class_balance', 0)}, head weights "
                    f"`{c.get('head_weights', 'mouth=4,yaw=4,pitch=4')}`, batch "
                    f"{c.get('probe_batch')} + {c.get('wide_batch') or c.get('probe_batch', 0) // 4} wide, "
                    f"lr {c.get('lr')}, bank `{c.get('bank')}`)"
                )
    if counter:
        whose = (
            "the counter's"
            if card.get("config", {}).get("only") == "recalibrate"
            else "the probe's own"
        )
        lines.append(
            "- people.safetensors: a separate people counter; `Eyes` counts people on whole "
            f"canvases with it (people_accuracy_wide below is {whose} count)"
        )
    else:
        lines.append("- no people.safetensors: the probe itself counts people on whole canvases")
    lines += [
        "",
        "## Held-out validation (`validate_eyes`)",
        "",
        "| held-out check | value | target |",
        "|---|---|---|",
        f"| 1:N identification among {v['people']} people (top-1) | {v['identification_top1']:.3f} | >= 0.98 |",
        f"| verification ROC AUC | {v['verification_auc']:.4f} | >= 0.99 |",
        *[f"| probe {k} | {val:.3f} | >= 0.95 |" for k, val in acc.items()],
        f"| yaw MAE (rad) | {v['yaw_mae_rad']:.3f} | - |",
        f"| mouth-opening MAE | {v['mouth_mae']:.3f} | - |",
        f"| speaking threshold (mouth range, fitted on eyes-split clips) | {v['speaking_threshold']:.3f} | - |",
        "",
        "Reproduce: the commands above (`--only probes` loads identity.safetensors from `--out`), "
        "or see `docs/measurement.md`.",
        "",
        "## All runs, oldest first",
        "",
        *[f"- {_run_line(h)}" for h in history],
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
