"""Cloning quality over held-out people, measured with cameo's eyes.

    .venv/bin/python benchmarks/clone_quality.py [--people 5] [--seeds 2]

For each held-out person: write 20 captioned photos, train a LoRA with the default settings
(timed), then generate, in scenes whose backgrounds the photos never show:
  base  = the base model given the best text description of the person,
  clone = the LoRA at scale 1 called by its trigger word;
and, on prompts that do not name the person, the base model with and without the LoRA (leakage);
and the ceiling: the person's real clips through the base's VAE, scored as the clones are.
Writes docs/clone_quality.json; docs/quality.md quotes it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import multiprocessing
import random
import shlex
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from cameo.data.world_folders import CAPTION_STYLES, write_person_folder
from cameo.generation import GenerateConfig, generate_frames
from cameo.metrics.evaluate import Eyes, default_prompts, load_references, score_clip, summarise
from cameo.metrics.scores import self_similarity
from cameo.models import load_pipeline
from cameo.training import TrainConfig, run_training
from cameo.world import identity, person_sample
from cameo.world.captions import full_description
from cameo.world.traits import BACKGROUND_COLOURS
from common import add_gen_option, parse_overrides, vae_roundtrip, write_json

TRIGGER = "mike"


def unseen_scenes(photos: Path, n: int = 4) -> list[str]:
    truth = json.loads((photos / "truth.json").read_text())
    seen = {p["background"]["background_name"] for p in truth["photos"]}
    free = [c for c in BACKGROUND_COLOURS if c not in seen] or BACKGROUND_COLOURS
    acts = ["speaking", "silent", "talking, smiling", "quiet"]
    return [
        f"{acts[i % len(acts)]}, in front of {('an ' if free[i % len(free)][0] in 'aeiou' else 'a ')}{free[i % len(free)]} wall"
        for i in range(n)
    ]


def trained_lora(cfg: TrainConfig, record: Path) -> tuple[Path, float]:
    """Train, or reuse the LoRA that a kept --work folder holds for these very settings."""
    settings = json.dumps(dataclasses.asdict(cfg), sort_keys=True)
    if record.is_file():
        done = json.loads(record.read_text())
        if done["settings"] == settings and Path(done["lora"]).is_file():
            return Path(done["lora"]), done["train_seconds"]
    t0 = time.time()
    lora = run_training(dataclasses.replace(cfg, overwrite=True), log=lambda m: None)
    train_s = time.time() - t0
    record.write_text(
        json.dumps({"settings": settings, "lora": str(lora), "train_seconds": train_s})
    )
    return lora, train_s


def vae_ceiling(eyes: Eyes, vae, person: int, refs, self_sim: float, n: int) -> dict:
    """What a perfect transformer or LoRA could score for this person: n of their real
    17-frame clips (random scenes, never generated), through the base's VAE, scored as the
    clones are. A clone cannot be identified more often than this except by chance."""
    clips = []
    for i in range(n):
        real = person_sample("heldout", person, random.Random(f"bench/ceiling/{person}/{i}"))
        clips.append(
            score_clip(eyes, vae_roundtrip(vae, real.frames), real.caption, refs, self_sim)
        )
    s = summarise(clips)
    return {"identification": s["identification_rate"], "identity": s["identity_normalised"]}


def one_person(
    person: int,
    eyes: Eyes,
    seeds: int,
    work: Path,
    sets: dict,
    trigger: str = TRIGGER,
    captions: str = "named",
    gen: dict | None = None,
) -> dict:
    photos = write_person_folder(
        person, work / f"p{person}" / "photos", 20, captions=captions, overwrite=True
    )  # the same seed, the same photos: a kept --work folder's are rewritten alike
    cfg = TrainConfig.from_options(
        data=str(photos),
        trigger=trigger,
        name=trigger,
        out=str(work / f"p{person}" / "lora"),
        log_with="none",
        validate_every=0,
        **sets,
    )
    lora, train_s = trained_lora(cfg, work / f"p{person}" / "trained.json")
    refs = eyes.embed(load_references(photos))
    self_sim = self_similarity(refs)
    desc = full_description(identity("heldout", person))
    base, clone = load_pipeline(cfg.base), load_pipeline(cfg.base)  # --set base=DIR: another
    clone.load_lora_weights(str(lora), adapter_name="subject")
    res: dict[str, list] = {"base": [], "clone": [], "leak_base": [], "leak_lora": []}
    for k, scene in enumerate(unseen_scenes(photos)):
        for seed in range(seeds):
            g = dict(seed=100 * k + seed, **(gen or {}))
            res["base"].append(
                score_clip(
                    eyes,
                    generate_frames(base, GenerateConfig(prompt=f"{desc}, {scene}", **g)),
                    f"{desc}, {scene}",
                    refs,
                    self_sim,
                )
            )
            res["clone"].append(
                score_clip(
                    eyes,
                    generate_frames(clone, GenerateConfig(prompt=f"{trigger}, {scene}", **g)),
                    f"{trigger}, {scene}",
                    refs,
                    self_sim,
                )
            )
    for k, prompt in enumerate(default_prompts(trigger)["others"]):
        for seed in range(seeds):
            cfg_g = GenerateConfig(prompt=prompt, seed=100 * k + seed, **(gen or {}))
            res["leak_base"].append(
                score_clip(eyes, generate_frames(base, cfg_g), prompt, refs, self_sim)
            )
            res["leak_lora"].append(
                score_clip(eyes, generate_frames(clone, cfg_g), prompt, refs, self_sim)
            )
    s = {k: summarise(v) for k, v in res.items()}
    ceiling = vae_ceiling(eyes, base.vae, person, refs, self_sim, len(res["clone"]))
    per_frame = np.array([c["people"][0]["identity_per_frame"] for c in res["clone"]]) / self_sim
    others = default_prompts(trigger)["others"]
    by_prompt = {  # the rise per leakage prompt: which look the LoRA drags towards the person
        prompt: float(
            np.mean(
                [
                    res["leak_lora"][k * seeds + j]["people"][0]["identity"]
                    - res["leak_base"][k * seeds + j]["people"][0]["identity"]
                    for j in range(seeds)
                ]
            )
        )
        for k, prompt in enumerate(others)
    }
    return {
        "person": person,
        "train_seconds": round(train_s, 1),
        "steps": cfg.steps,
        "self_similarity": self_sim,
        "base_identification": s["base"]["identification_rate"],
        "clone_identification": s["clone"]["identification_rate"],
        "base_identity": s["base"]["identity_normalised"],
        "clone_identity": s["clone"]["identity_normalised"],
        # identity over the clip: photos teach only the first latent frame
        "clone_identity_frame0": float(per_frame[:, 0].mean()),
        "clone_identity_frames5_16": float(per_frame[:, 5:].mean()),
        "ceiling_identification": ceiling["identification"],
        "ceiling_identity": ceiling["identity"],
        "base_fidelity": s["base"]["prompt_fidelity"],
        "clone_fidelity": s["clone"]["prompt_fidelity"],
        "leakage": s["leak_lora"]["identity"] - s["leak_base"]["identity"],
        "leakage_by_prompt": by_prompt,
    }


def person_in_process(
    person: int,
    *,
    seeds: int,
    sets: dict,
    trigger: str,
    captions: str,
    threads: int,
    gen: dict,
    work: str = "",
) -> dict:
    """``one_person`` with its own eyes and scratch folder (one of ``--jobs`` processes)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    if work:  # kept: a later run with other --gen settings reuses the trained LoRAs
        row = one_person(person, Eyes(), seeds, Path(work), sets, trigger, captions, gen)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            row = one_person(person, Eyes(), seeds, Path(tmp), sets, trigger, captions, gen)
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--people", type=int, default=5)
    ap.add_argument("--first", type=int, default=11, help="first held-out person index")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="train with this TrainConfig field changed (default: cameo train's defaults); "
        "base=DIR also generates with that base model",
    )
    ap.add_argument("--trigger", default=TRIGGER, help="the word that names every person")
    ap.add_argument(
        "--captions",
        default="named",
        choices=CAPTION_STYLES,
        help="photo captions: named (trigger + scene) or described (also the person's traits)",
    )
    ap.add_argument("--json", default="clone_quality.json", help="file name under docs/")
    ap.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="people measured at once, each in its own process on one thread",
    )
    ap.add_argument(
        "--work",
        default="",
        help="keep photos and LoRAs in this folder and reuse LoRAs trained with the same "
        "settings (for trials of generation settings); default: a temporary folder",
    )
    add_gen_option(ap)
    args = ap.parse_args()
    sets = parse_overrides(args.set, TrainConfig())
    gen = parse_overrides(args.gen, GenerateConfig())
    people = list(range(args.first, args.first + args.people))
    job = functools.partial(
        person_in_process,
        seeds=args.seeds,
        sets=sets,
        trigger=args.trigger,
        captions=args.captions,
        threads=1 if args.jobs > 1 else 0,
        gen=gen,
        work=args.work,
    )
    if args.jobs > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            rows = list(pool.map(job, people))
    else:
        rows = [job(p) for p in people]
    keys = [k for k in rows[0] if k not in ("person", "steps", "leakage_by_prompt")]
    mean = {k: float(np.mean([r[k] for r in rows])) for k in keys}
    mean["fidelity_ratio"] = mean["clone_fidelity"] / max(mean["base_fidelity"], 1e-9)
    for k in ("identification", "identity"):  # how much of what the VAE lets through
        mean[f"clone_{k}_of_ceiling"] = mean[f"clone_{k}"] / max(mean[f"ceiling_{k}"], 1e-9)
    print(json.dumps(mean, indent=1))
    print(
        write_json(
            args.json,
            {
                "command": "python benchmarks/clone_quality.py " + shlex.join(sys.argv[1:]),
                "train_settings": {**sets, "defaults": "cameo train"},
                "generate_settings": {**gen, "defaults": "cameo generate"},
                "captions": args.captions,
                "jobs": args.jobs,
                "people": rows,
                "mean": mean,
            },
        )
    )


if __name__ == "__main__":
    main()
