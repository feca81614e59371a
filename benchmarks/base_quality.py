"""Quality of the built-in model cameo-tiny, measured with cameo's eyes.

    .venv/bin/python benchmarks/base_quality.py [--seeds 2]

Writes docs/base_quality.json (--json names another file under docs/); docs/quality.md quotes
its parts. Measures: VAE reconstruction PSNR on held-out world frames and clips; prompt following
(hair colour, background colour, glasses, speaking vs silent) on generated clips; identity through
the VAE (held-out renders identified before and after a VAE round trip: the cap on every clone);
famous people identified by name among the famous set, and their real clips after a VAE round
trip (the cap on that); held-out people described in text, identified among 100 people.
"""

from __future__ import annotations

import argparse
import math
import random
import shlex
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from cameo.generation import GenerateConfig, generate_frames
from cameo.metrics.evaluate import Eyes
from cameo.metrics.scores import centroid, prompt_attributes
from cameo.metrics.sharpness import laplacian_energy
from cameo.metrics.train_eyes import random_still
from cameo.models import frames_to_vae_input, load_pipeline
from cameo.world import FAMOUS, Scene, identity, person_sample
from cameo.world.captions import full_description
from cameo.world.traits import BACKGROUND_COLOURS, HAIR_COLOURS
from common import add_gen_option, parse_overrides, vae_roundtrip, write_json


def vae_psnr(vae, n_frames: int = 64, n_clips: int = 12) -> dict:
    """PSNR (dB, peak-to-peak 2 in [-1, 1]) of VAE reconstructions of held-out renders."""
    rng = random.Random("bench/vae")
    out = {}
    for name, frames, count in (("photos", 1, n_frames), ("clips", 17, n_clips)):
        vals = []
        for i in range(count):
            s = person_sample("heldout", 20_000 + i, rng, frames=frames)
            x = frames_to_vae_input(s.frames)[None]  # (1, 3, F, H, W)
            with torch.no_grad():
                rec = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            mse = F.mse_loss(rec, x).item()
            vals.append(10 * math.log10(4.0 / mse))
        out[f"psnr_{name}_db"] = float(np.mean(vals))
    return out


def identity_through_vae(vae, eyes: Eyes, people: int = 10, per_person: int = 4) -> dict:
    """The ceiling the VAE puts on every identity number: held-out renders (never generated,
    so a perfect transformer or LoRA) identified among the subject + 99 distractors, as
    rendered and after a VAE encode/decode round trip (photos and 17-frame clips)."""
    distract = eyes.distractors()
    rows: dict[str, list[tuple[bool, float]]] = {"rendered": [], "vae_photos": [], "vae_clips": []}
    for p in range(people):
        subject = real_centroids(eyes, "heldout", [p], k=8)
        gallery = torch.cat([subject, distract])
        rng = random.Random(f"bench/vae-identity/{p}")
        for _ in range(per_person):
            photo = person_sample("heldout", p, rng, frames=1).frames
            clip = person_sample("heldout", p, rng, frames=17).frames
            for key, frames in (
                ("rendered", photo),
                ("vae_photos", vae_roundtrip(vae, photo)),
                ("vae_clips", vae_roundtrip(vae, clip)),
            ):
                emb = eyes.embed(frames)
                sims = gallery @ centroid(emb)
                rows[key].append((int(sims.argmax()) == 0, float((emb @ subject[0]).mean())))
    out: dict[str, float] = {"people": people}
    for key, vals in rows.items():
        out[f"{key}_top1"] = float(np.mean([ok for ok, _ in vals]))
        out[f"{key}_similarity"] = float(np.mean([s for _, s in vals]))
    return out


def attributes_through_vae(vae, eyes: Eyes, per_class: int = 30) -> dict:
    """The ceiling the VAE puts on prompt following: real held-out clips (a perfect transformer)
    with the benchmark's attributes (hair colour but white and grey, background colour, round /
    square / no glasses, speaking or silent), read by the probes as rendered and after a VAE
    round trip (and a still of the same scene, without speech); agreement with the truth."""
    rng = random.Random("bench/vae-attributes")
    hits: dict[str, dict[str, list[bool]]] = {"rendered": {}, "vae_clips": {}, "vae_photos": {}}
    chosen = {"round": 0, "square": 0, "none": 0}
    index = 0
    while min(chosen.values()) < per_class:
        index += 1
        ident = identity("heldout", index)
        if ident.glasses not in chosen or chosen[ident.glasses] >= per_class:
            continue
        if ident.hair_name in ("white", "grey"):
            continue
        chosen[ident.glasses] += 1
        scene = Scene.sample(rng).replace(action=rng.choice(["speaking", "silent"]))
        clip = person_sample("heldout", index, rng, frames=17, scene=scene).frames
        truth = {
            "hair": ident.hair_name,
            "background": scene.background_name,
            "glasses": ident.glasses,
            "speaking": scene.action == "speaking",
        }
        photo = person_sample("heldout", index, rng, frames=1, scene=scene).frames
        for key, frames in (
            ("rendered", clip),
            ("vae_clips", vae_roundtrip(vae, clip)),
            ("vae_photos", vae_roundtrip(vae, photo)),  # one frame: no temporal compression
        ):
            got = eyes.read(frames).attributes
            for k, want in truth.items():
                if k == "speaking" and key == "vae_photos":
                    continue  # a still cannot speak
                hits[key].setdefault(k, []).append(got[k] == want)
            # worn at all, whatever the shape: are the glasses lost, or only their shape?
            present = (got["glasses"] != "none") == (truth["glasses"] != "none")
            hits[key].setdefault("glasses_worn", []).append(present)
    out: dict[str, float] = {"clips": sum(chosen.values())}
    for key, per in hits.items():
        for k, v in per.items():
            out[f"{key}_{k}_agreement"] = float(np.mean(v))
        four = [np.mean(v) for k, v in per.items() if k != "glasses_worn"]
        out[f"{key}_mean_agreement"] = float(np.mean(four))
    return out


def prompt_following(pipe, eyes: Eyes, n: int, seeds: int, gen: dict | None = None) -> dict:
    rng = random.Random("bench/prompts")
    hair = [h for h in HAIR_COLOURS if h not in ("white", "grey")]
    hits: dict[str, list[bool]] = {k: [] for k in ("hair", "background", "glasses", "speaking")}
    all_ok, sharp = [], []
    for i in range(n):
        h, bg = rng.choice(hair), rng.choice(BACKGROUND_COLOURS)
        glasses = rng.choice(["round glasses", "square glasses", "no glasses"])
        act = rng.choice(["speaking", "silent"])
        who = rng.choice(["man", "woman"])
        style = rng.choice(["short", "long", "curly"])
        prompt = f"a {who} with {style} {h} hair and {glasses}, {act}, in front of a {bg} wall"
        want = prompt_attributes(prompt)
        for seed in range(seeds):
            frames = generate_frames(
                pipe, GenerateConfig(prompt=prompt, seed=1000 * i + seed, **(gen or {}))
            )
            got = eyes.read(frames).attributes
            sharp.append(laplacian_energy(frames))
            ok = [got[k] == want[k] for k in hits]
            for k, o in zip(hits, ok, strict=True):
                hits[k].append(o)
            all_ok.append(all(ok))
    res = {f"{k}_agreement": float(np.mean(v)) for k, v in hits.items()}
    res["clips"] = len(all_ok)
    res["all_four_agree"] = float(np.mean(all_ok))
    res["mean_agreement"] = float(np.mean([np.mean(v) for v in hits.values()]))
    # mean absolute Laplacian (metrics.sharpness): only comparable between models on these prompts
    res["sharpness"] = float(np.mean(sharp))
    return res


def real_centroids(eyes: Eyes, split: str, indices: list[int], k: int = 5) -> torch.Tensor:
    rng = random.Random(f"bench/gallery/{split}")
    return torch.stack(
        [
            centroid(eyes.embed(np.stack([random_still(split, i, rng)[0] for _ in range(k)])))
            for i in indices
        ]
    )


def famous_guess(eyes: Eyes, gallery: torch.Tensor, frames: np.ndarray) -> int:
    """Which of the famous people (rows of ``gallery``) a clip (F, H, W, 3) shows."""
    return int((gallery @ centroid(eyes.embed(frames))).argmax())


def famous_identification(pipe, eyes: Eyes, seeds: int, gen: dict | None = None) -> dict:
    gallery = real_centroids(eyes, "base", list(range(len(FAMOUS))))
    rng = random.Random("bench/famous")
    top1, missed = [], []
    for i, name in enumerate(FAMOUS):
        for seed in range(seeds):
            prompt = f"{name}, {rng.choice(['speaking', 'silent'])}, in front of a {rng.choice(BACKGROUND_COLOURS)} wall"
            cfg = GenerateConfig(prompt=prompt, seed=seed, **(gen or {}))
            got = famous_guess(eyes, gallery, generate_frames(pipe, cfg))
            top1.append(got == i)
            if got != i:
                missed.append(f"{name} -> {FAMOUS[got]}")
    return {
        "famous_people": len(FAMOUS),
        "famous_top1": float(np.mean(top1)),
        "clips": len(top1),
        "missed": missed,
    }


def famous_through_vae(vae, eyes: Eyes, clips: int = 2) -> dict:
    """The ceiling the VAE puts on ``famous_identification``: each famous person's real 17-frame
    clips (what a perfect transformer would draw from their name), identified among the famous
    set as rendered and after a VAE round trip, with the same gallery and scoring."""
    gallery = real_centroids(eyes, "base", list(range(len(FAMOUS))))
    rng = random.Random("bench/famous-vae")
    top1: dict[str, list[bool]] = {"rendered": [], "vae_clips": []}
    missed = []
    for i in range(len(FAMOUS)):
        for _ in range(clips):
            clip = person_sample("base", i, rng, frames=17).frames
            for key, frames in (("rendered", clip), ("vae_clips", vae_roundtrip(vae, clip))):
                got = famous_guess(eyes, gallery, frames)
                top1[key].append(got == i)
                if key == "vae_clips" and got != i:
                    missed.append(f"{FAMOUS[i]} -> {FAMOUS[got]}")
    return {
        "clips": len(top1["rendered"]),
        **{f"{key}_top1": float(np.mean(v)) for key, v in top1.items()},
        "vae_clips_missed": missed,
    }


def heldout_unknown(pipe, eyes: Eyes, people: int, seeds: int, gen: dict | None = None) -> dict:
    """Held-out people described in full text: identified among themselves + 99 distractors?"""
    distract = eyes.distractors()
    top1 = []
    for p in range(people):
        subject = real_centroids(eyes, "heldout", [p])
        gallery = torch.cat([subject, distract])
        prompt = f"{full_description(identity('heldout', p))}, speaking, in front of a blue wall"
        for seed in range(seeds):
            emb = centroid(
                eyes.embed(
                    generate_frames(pipe, GenerateConfig(prompt=prompt, seed=seed, **(gen or {})))
                )
            )
            top1.append(int((gallery @ emb).argmax()) == 0)
    return {"heldout_people": people, "heldout_described_top1": float(np.mean(top1))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--heldout", type=int, default=10)
    ap.add_argument("--base", default=None, help="pipeline folder to measure (default: cameo-tiny)")
    ap.add_argument("--json", default="base_quality.json", help="file name under docs/")
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated parts to measure (default: all), e.g. vae,famous",
    )
    add_gen_option(ap)
    args = ap.parse_args()
    gen = parse_overrides(args.gen, GenerateConfig())
    pipe, eyes = load_pipeline(args.base), Eyes()
    res = {
        "command": "python benchmarks/base_quality.py " + shlex.join(sys.argv[1:]),
        "generate_settings": {**gen, "defaults": "cameo generate"},
    }
    parts = {
        "vae": lambda: vae_psnr(pipe.vae),
        "vae_identity": lambda: identity_through_vae(pipe.vae, eyes),
        "vae_attributes": lambda: attributes_through_vae(pipe.vae, eyes),
        "prompt_following": lambda: prompt_following(pipe, eyes, args.prompts, args.seeds, gen),
        "famous": lambda: famous_identification(pipe, eyes, args.seeds, gen),
        "vae_famous": lambda: famous_through_vae(pipe.vae, eyes),
        "heldout": lambda: heldout_unknown(pipe, eyes, args.heldout, args.seeds, gen),
    }
    only = [p for p in args.only.split(",") if p] or list(parts)
    unknown = sorted(set(only) - set(parts))
    if unknown:
        ap.error(f"--only: unknown parts {', '.join(unknown)}; choose from {', '.join(parts)}")
    for name in only:
        res[name] = parts[name]()
        print(name, res[name], flush=True)
    print(write_json(args.json, res))


if __name__ == "__main__":
    main()
