"""How good are the eyes? Identification, verification and probe accuracy on held-out people."""

from __future__ import annotations

import random

import numpy as np
import torch

from ..world import Scene, person_sample
from .nets import PROBE_CLASSES, AttributeProbe, IdentityEncoder, to_input
from .stills import random_still


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve by the rank statistic (Mann-Whitney U)."""
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def embed(enc: IdentityEncoder, frames: np.ndarray, batch: int = 256) -> torch.Tensor:
    return torch.cat([enc(to_input(frames[i : i + batch])) for i in range(0, len(frames), batch)])


@torch.no_grad()
def probe_frames(
    probe: AttributeProbe, frames: np.ndarray, batch: int = 256
) -> dict[str, torch.Tensor]:
    outs = [probe(to_input(frames[i : i + batch])) for i in range(0, len(frames), batch)]
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


def identity_eval(
    enc: IdentityEncoder, people: int = 100, refs: int = 5, queries: int = 5, seed: int = 1
) -> dict:
    """1:N identification among ``people`` held-out people (gallery = mean of ``refs`` photos)
    and verification ROC AUC over all query pairs."""
    rng = random.Random(f"cameo-eyes/validate/{seed}")
    pix = np.stack(
        [random_still("heldout", p, rng)[0] for p in range(people) for _ in range(refs + queries)]
    )
    e = embed(enc, pix).view(people, refs + queries, -1)
    gallery = torch.nn.functional.normalize(e[:, :refs].mean(1), dim=-1)
    q = e[:, refs:].reshape(people * queries, -1)
    truth = torch.arange(people).repeat_interleave(queries)
    top1 = float(((q @ gallery.T).argmax(1) == truth).float().mean())
    sims = (q @ q.T).numpy()
    same = (truth[:, None] == truth[None, :]).numpy()
    iu = np.triu_indices(len(q), 1)
    return {
        "people": people,
        "identification_top1": top1,
        "verification_auc": roc_auc(sims[iu], same[iu]),
        "same_person_cos": float(sims[iu][same[iu]].mean()),
        "different_person_cos": float(sims[iu][~same[iu]].mean()),
    }


def _clip_mouth_range(probe: AttributeProbe, clips: list[np.ndarray]) -> np.ndarray:
    out = []
    for c in clips:
        m = probe_frames(probe, c)["mouth"]
        out.append(float(m.max() - m.min()))
    return np.array(out)


def _speech_clips(split: str, n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = random.Random(f"cameo-eyes/speech/{split}/{seed}")
    clips, labels = [], []
    for i in range(n):
        speaking = i % 2 == 0
        scene = Scene.sample(rng)
        if speaking:
            scene = scene.replace(action="speaking")
        elif scene.action == "speaking":
            scene = scene.replace(action=rng.choice(["silent", "turning", "nodding"]))
        clips.append(person_sample(split, i, rng, frames=17, scene=scene).frames)
        labels.append(speaking)
    return clips, np.array(labels)


def probe_eval(
    probe: AttributeProbe, n: int = 600, seed: int = 2, counter: AttributeProbe | None = None
) -> dict:
    """Accuracy of each probe head on held-out renders, and speech detection on clips. With a
    ``counter``, the people count is read by it (as ``Eyes`` does)."""
    rng = random.Random(f"cameo-eyes/probe-eval/{seed}")
    singles = [random_still("heldout", 5000 + i, rng) for i in range(n)]
    wide = [
        random_still("heldout", 9000 + i, rng, width=128, two=i % 2 == 0) for i in range(n // 3)
    ]
    res: dict[str, float] = {}
    for name, data in (("single", singles), ("wide", wide)):
        frames = np.stack([d[0] for d in data])
        out = probe_frames(probe, frames)
        if counter is not None:
            out["people"] = probe_frames(counter, frames)["people"]
        labels = [d[1] for d in data]
        keys = (
            ["hair", "background", "glasses", "hat", "people"]
            if name == "single"
            else ["people", "background"]
        )
        for k in keys:
            y = torch.tensor([lab[k] for lab in labels])
            keep = y != -100
            res[f"{k}_accuracy_{name}"] = float((out[k].argmax(1)[keep] == y[keep]).float().mean())
        if name == "single":
            yaw = torch.tensor([lab["yaw"] for lab in labels])
            res["yaw_mae_rad"] = float((out["yaw"] - yaw).abs().mean())
            turned = yaw.abs() > 0.2
            res["yaw_direction_accuracy"] = float(
                (torch.sign(out["yaw"][turned]) == torch.sign(yaw[turned])).float().mean()
            )
            pitch = torch.tensor([lab["pitch"] for lab in labels])
            res["pitch_mae_rad"] = float((out["pitch"] - pitch).abs().mean())
            mouth = torch.tensor([lab["mouth"] for lab in labels])
            res["mouth_mae"] = float((out["mouth"] - mouth).abs().mean())
    # Speech: calibrate the mouth-range threshold on eyes-split clips, test on held-out clips.
    cal_clips, cal_y = _speech_clips("eyes", 120, seed)
    cal = _clip_mouth_range(probe, cal_clips)
    cands = np.unique(cal)
    accs = [((cal > t) == cal_y).mean() for t in cands]
    thr = float(cands[int(np.argmax(accs))])
    test_clips, test_y = _speech_clips("heldout", 200, seed + 1)
    res["speaking_threshold"] = thr
    res["speaking_accuracy"] = float(
        ((_clip_mouth_range(probe, test_clips) > thr) == test_y).mean()
    )
    return res


def validate_eyes(
    enc: IdentityEncoder, probe: AttributeProbe, counter: AttributeProbe | None = None
) -> dict:
    """Everything ``identity_eval`` and ``probe_eval`` measure, and the probe's class names."""
    return {**identity_eval(enc), **probe_eval(probe, counter=counter), "classes": PROBE_CLASSES}
