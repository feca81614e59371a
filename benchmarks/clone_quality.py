"""Cloning quality over held-out people, measured with cameo's eyes.

    .venv/bin/python benchmarks/clone_quality.py [--people 5] [--seeds 2]

For each held-out person: write 20 captioned photos, train a LoRA with the default settings
(timed), then generate, in scenes whose backgrounds the photos never show:
  base  = the base model given the best text description of the person,
  clone = the LoRA at scale 1 called by its trigger word;
and, on prompts that do not name the person, the base model with and without the LoRA (leakage);
and the ceiling: the person's real clips through the base's VAE, scored as the clones are.
Beside the eyes' identity it measures what a person sees: sharpness and visible speech against
the person's real render of each clone prompt, and a second identity judge that cameo's
training never saw (dlib's face descriptor, ``cameo.metrics.face_lineup``).

With --work every person's row, their clone clips' latents (clone_latents.safetensors, for
decoding again with another decoder) and a contact sheet (sheet.png: real, real through the
VAE, clone) are kept in work/p<N>/; a rerun with the same settings skips finished people.
Persons 11-20 are the development set; persons 100-119 (--fresh) are never used for decisions.
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
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from safetensors.torch import save_file

from cameo import faces
from cameo.data.media import contact_sheet, write_png
from cameo.data.world_folders import CAPTION_STYLES, write_person_folder
from cameo.generation import GenerateConfig, generate_frames
from cameo.metrics.evaluate import Eyes, default_prompts, load_references, score_clip, summarise
from cameo.metrics.face_lineup import FaceLineup, person_descriptor
from cameo.metrics.scores import prompt_attributes, self_similarity
from cameo.metrics.sharpness import laplacian_energy
from cameo.metrics.speech import mouth_range, speech_visible
from cameo.metrics.world_identity import distractor_stills
from cameo.models import load_pipeline
from cameo.training import TrainConfig, run_training
from cameo.world import identity, person_sample
from cameo.world.captions import full_description
from cameo.world.traits import BACKGROUND_COLOURS, SCENE_COLOURS, Scene
from common import add_gen_option, decoded_latents, parse_overrides, vae_roundtrip, write_json

TRIGGER = "mike"
FRESH = (100, 20)  # persons 100-119: never used for any decision


def unseen_scenes(photos: Path, n: int = 4) -> list[str]:
    truth = json.loads((photos / "truth.json").read_text())
    seen = {p["background"]["background_name"] for p in truth["photos"]}
    free = [c for c in BACKGROUND_COLOURS if c not in seen] or BACKGROUND_COLOURS
    acts = ["speaking", "silent", "talking, smiling", "quiet"]
    return [
        f"{acts[i % len(acts)]}, in front of {('an ' if free[i % len(free)][0] in 'aeiou' else 'a ')}{free[i % len(free)]} wall"
        for i in range(n)
    ]


def real_scene_clip(person: int, scene: str, seed: int) -> np.ndarray:
    """The person's real 17-frame render of a clone prompt's scene: its background colour,
    speaking or silent, smiling when it says so, no hat; pose and light drawn by ``seed``."""
    said = prompt_attributes(scene)
    rng = random.Random(f"bench/real/{person}/{scene}/{seed}")
    drawn = Scene.sample(rng)
    bg = said.get("background", drawn.background_name)
    sc = drawn.replace(
        background_name=bg,
        background=SCENE_COLOURS[bg],
        action="speaking" if said.get("speaking") else "silent",
        expression="smiling" if "smiling" in scene else "neutral",
        hat="none",
    )
    return person_sample("heldout", person, rng, scene=sc).frames


def what_a_person_sees(eyes: Eyes, clone: list, real: list, vae: list, speak: list) -> dict:
    """Sharpness and visible speech of the clone clips against the person's real renders of the
    same prompts (and those renders through the VAE: the ceiling). ``speak``: which clips the
    prompt asks to speak."""
    sharp = {
        k: np.mean([laplacian_energy(c) for c in v])
        for k, v in (("clone", clone), ("real", real), ("vae", vae))
    }
    ranges = {
        k: [mouth_range(eyes, c) for c in v]
        for k, v in (("clone", clone), ("real", real), ("vae", vae))
    }
    thr = eyes.speaking_threshold
    spoken = {k: [r for r, s in zip(v, speak, strict=True) if s] for k, v in ranges.items()}
    silent = {k: [r for r, s in zip(v, speak, strict=True) if not s] for k, v in ranges.items()}
    return {
        "sharpness_clone": float(sharp["clone"]),
        "sharpness_real": float(sharp["real"]),
        "sharpness_ratio": float(sharp["clone"] / max(sharp["real"], 1e-9)),
        "sharpness_vae_ratio": float(sharp["vae"] / max(sharp["real"], 1e-9)),
        "mouth_range_clone": float(np.mean(spoken["clone"])),
        "mouth_range_real": float(np.mean(spoken["real"])),
        "mouth_range_vae": float(np.mean(spoken["vae"])),
        "mouth_range_ratio": float(np.mean(spoken["clone"]) / max(np.mean(spoken["real"]), 1e-9)),
        "speech_visible_clone": speech_visible(spoken["clone"], thr),
        "speech_visible_real": speech_visible(spoken["real"], thr),
        "speech_visible_vae": speech_visible(spoken["vae"], thr),
        # the threshold's false alarms: real silent clips read as speaking
        "speech_false_real": speech_visible(silent["real"], thr),
        "speech_false_clone": speech_visible(silent["clone"], thr),
    }


def face_judge(lineup: FaceLineup, photos: np.ndarray, clone: list, real: list, vae: list) -> dict:
    """dlib's face descriptor as a second judge: identification in the line-up and the share
    of frames with a face found, for the clones, the real renders of the same prompts (the
    judge's ceiling) and those through the VAE."""
    person = person_descriptor(photos)
    out: dict = {"face_lineup": lineup.size}
    if person is None:
        return out
    for name, clips in (("clone", clone), ("real", real), ("vae", vae)):
        judged = [lineup.judge(person, c) for c in clips]
        out[f"face_identification_{name}"] = float(np.mean([j["identified"] for j in judged]))
        out[f"face_found_{name}"] = float(np.mean([j["face_found"] for j in judged]))
    return out


def keep_clips(folder: Path, latents: list, prompts: list[str], sheet: list[np.ndarray]) -> None:
    """The clone clips' latents (one tensor a clip, (1, C, F', h, w), as the VAE decodes them)
    and a contact sheet, rows: real render, real through the VAE, clone (frames 0, 4, ...)."""
    save_file(
        {f"clip{i:02d}": z.contiguous() for i, z in enumerate(latents)},
        str(folder / "clone_latents.safetensors"),
        metadata={"prompts": json.dumps(prompts)},
    )
    rows = [np.asarray(contact_sheet(c[::4], columns=5, scale=2)) for c in sheet]
    write_png(Image.fromarray(np.concatenate(rows)), folder / "sheet.png")


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
    lineup: FaceLineup | None = None,
) -> dict:
    photos = write_person_folder(
        person, work / f"p{person}" / "photos", 20, captions=captions, overwrite=True
    )  # the same seed, the same photos: a kept --work folder's are rewritten alike
    cfg = TrainConfig.from_options(
        data=str(photos),
        trigger=trigger,
        name=trigger,
        out=str(work / f"p{person}" / "lora"),
        **{"log_with": "none", "validate_every": 0, **sets},
    )
    lora, train_s = trained_lora(cfg, work / f"p{person}" / "trained.json")
    refs = eyes.embed(load_references(photos))
    self_sim = self_similarity(refs)
    desc = full_description(identity("heldout", person))
    base, clone = load_pipeline(cfg.base), load_pipeline(cfg.base)  # --set base=DIR: another
    clone.load_lora_weights(str(lora), adapter_name="subject")
    res: dict[str, list] = {"base": [], "clone": [], "leak_base": [], "leak_lora": []}
    seen: dict[str, list] = {k: [] for k in ("clone", "real", "vae", "speak", "prompt", "latents")}
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
            with decoded_latents(clone.vae) as latents:
                frames = generate_frames(clone, GenerateConfig(prompt=f"{trigger}, {scene}", **g))
            res["clone"].append(score_clip(eyes, frames, f"{trigger}, {scene}", refs, self_sim))
            real = real_scene_clip(person, scene, seed)
            seen["clone"].append(frames)
            seen["real"].append(real)
            seen["vae"].append(vae_roundtrip(base.vae, real))
            seen["speak"].append(bool(prompt_attributes(scene).get("speaking")))
            seen["prompt"].append(f"{trigger}, {scene} (seed {g['seed']})")
            seen["latents"].extend(latents)
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
    sees = what_a_person_sees(eyes, seen["clone"], seen["real"], seen["vae"], seen["speak"])
    if lineup is not None:
        pix = load_references(photos)
        sees.update(face_judge(lineup, pix, seen["clone"], seen["real"], seen["vae"]))
    sheet = [
        c
        for k in range(min(2, len(seen["clone"]) // seeds))
        for c in (seen["real"][k * seeds], seen["vae"][k * seeds], seen["clone"][k * seeds])
    ]
    keep_clips(work / f"p{person}", seen["latents"], seen["prompt"], sheet)
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
        "fidelity_ratio": s["clone"]["prompt_fidelity"] / max(s["base"]["prompt_fidelity"], 1e-9),
        "leakage": s["leak_lora"]["identity"] - s["leak_base"]["identity"],
        **sees,
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
    lineup: np.ndarray | None = None,
) -> dict:
    """``one_person`` with its own eyes and scratch folder (one of ``--jobs`` processes).
    With ``work``, a row kept there for the same settings is returned without measuring."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    judge = FaceLineup(lineup) if lineup is not None else None
    settings = {"seeds": seeds, "sets": sets, "trigger": trigger, "captions": captions, "gen": gen}
    if work:  # kept: a later run with other --gen settings reuses the trained LoRAs
        kept = Path(work) / f"p{person}" / "row.json"
        if kept.is_file() and json.loads(kept.read_text())["settings"] == settings:
            return json.loads(kept.read_text())["row"]
        row = one_person(person, Eyes(), seeds, Path(work), sets, trigger, captions, gen, judge)
        kept.write_text(json.dumps({"settings": settings, "row": row}, indent=1))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            row = one_person(person, Eyes(), seeds, Path(tmp), sets, trigger, captions, gen, judge)
    print(row, flush=True)
    return row


def summary(rows: list[dict]) -> dict:
    """Means over people of every number, the worst fifth of people (the mean of the lowest
    fifth, at least one) for identification, and the worst person for leakage and fidelity."""
    keys = [k for k in rows[0] if k not in ("person", "steps", "leakage_by_prompt")]
    mean = {}
    for k in keys:
        vals = [r[k] for r in rows if isinstance(r.get(k), (int, float))]
        if vals:
            mean[k] = float(np.mean(vals))
    mean["fidelity_ratio"] = mean["clone_fidelity"] / max(mean["base_fidelity"], 1e-9)
    for k in ("identification", "identity"):  # how much of what the VAE lets through
        mean[f"clone_{k}_of_ceiling"] = mean[f"clone_{k}"] / max(mean[f"ceiling_{k}"], 1e-9)
    if "face_identification_real" in mean:
        mean["face_identification_of_ceiling"] = mean["face_identification_clone"] / max(
            mean["face_identification_real"], 1e-9
        )
    fifth = max(1, len(rows) // 5)
    for k in ("clone_identification", "face_identification_clone"):
        vals = sorted(r[k] for r in rows if k in r)
        if vals:
            mean[f"{k}_worst_fifth"] = float(np.mean(vals[:fifth]))
    mean["leakage_max"] = max(r["leakage"] for r in rows)
    mean["fidelity_ratio_min"] = min(r["fidelity_ratio"] for r in rows)
    return mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--people", type=int, default=5)
    ap.add_argument("--first", type=int, default=11, help="first held-out person index")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help=f"the fresh people, persons {FRESH[0]}-{sum(FRESH) - 1} (instead of --first/--people)",
    )
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
        "--threads",
        type=int,
        default=0,
        help="torch threads a process (default: torch's own, or 1 with --jobs over 1); "
        "1 beside another heavy job",
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
    first, count = FRESH if args.fresh else (args.first, args.people)
    people = list(range(first, first + count))
    lineup = None
    if faces.available():  # the face judge's line-up, once for every person
        cache = Path(args.work) / "face_lineup.npy" if args.work else None
        lineup = FaceLineup.from_stills(distractor_stills, cache).gallery
    job = functools.partial(
        person_in_process,
        seeds=args.seeds,
        sets=sets,
        trigger=args.trigger,
        captions=args.captions,
        threads=args.threads or (1 if args.jobs > 1 else 0),
        gen=gen,
        work=args.work,
        lineup=lineup,
    )
    if args.jobs > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=ctx) as pool:
            rows = list(pool.map(job, people))
    else:
        rows = [job(p) for p in people]
    mean = summary(rows)
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
                "speaking_threshold": Eyes().speaking_threshold,
                "people": rows,
                "mean": mean,
            },
        )
    )


if __name__ == "__main__":
    main()
