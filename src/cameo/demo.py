"""``cameo demo``: clone a person the base model has never seen, in a few minutes on a CPU.

1. writes 20 captioned photos of a held-out person to ``photos/``, as a user would bring them;
2. trains a LoRA on them (default settings);
3. renders, for prompts in scenes the photos never show, the base model given the best text
   description of the person beside the clone called by its trigger word;
4. measures both with cameo's eyes and prints the table.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from .data.media import contact_sheet, save_clip_outputs, write_png
from .data.world_folders import write_person_folder
from .generation import GenerateConfig, generate_frames
from .generation.sampling import load_for
from .metrics.evaluate import Eyes, load_references, score_clip, summarise
from .metrics.scores import self_similarity
from .training import TrainConfig, run_training
from .world import identity
from .world.captions import full_description

# A typical person, not the best: of the fresh people (persons 100-119, never used for any
# decision; docs/fresh_people.json), the one whose clone the eyes identify as often as the median
# clone, ties broken by dlib's face judge and then by the eyes' identity, each nearest its
# median: person 102, identified in 0 of 8 clips (as the median clone), identity 0.52 (median
# 0.54). Person 12, the demo person before, is the development set's best-cloned person.
DEMO_PERSON = 102
TYPICAL = "a typical fresh person: cloned as well as the median of persons 100-119"
TRIGGER = "mike"
SCENES = [
    "speaking, in front of a blue wall",
    "silent, smiling, in a room with green walls",
    "talking, against an orange background",
]


def demo_prompts(description: str, trigger: str = TRIGGER) -> list[tuple[str, str]]:
    """(base prompt, clone prompt) pairs: same scene, the person described vs named."""
    return [(f"{description}, {scene}", f"{trigger}, {scene}") for scene in SCENES]


def run_demo(
    out: Path,
    overwrite: bool = False,
    person: int = DEMO_PERSON,
    steps: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
) -> dict:
    """Run the whole clone flow into ``out`` and return the report. ``device`` and ``dtype``:
    where the clips are rendered, as ``GenerateConfig`` reads them (cameo-tiny: fp32)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already holds a demo")
    t0 = time.time()
    photos = write_person_folder(person, out / "photos", 20, overwrite=True)
    about = f" ({TYPICAL})" if person == DEMO_PERSON else ""
    print(f"1/4 wrote 20 photos of held-out person {person}{about} to {photos}")
    cfg = TrainConfig(
        data=str(photos),
        trigger=TRIGGER,
        name=TRIGGER,
        out=str(out / "lora"),
        overwrite=True,
        log_with="none",
        validate_every=0,
    )
    if steps:
        cfg.steps = steps
    print(f"2/4 training a rank-{cfg.lora.rank} LoRA for {cfg.steps} steps")
    lora = run_training(cfg, log=lambda m: print("    " + m.replace("\n", "\n    ")))
    print("3/4 rendering base model (described) vs clone (named), in scenes absent from the photos")
    eyes = Eyes()
    refs = eyes.embed(load_references(photos))
    self_sim = self_similarity(refs)
    pairs = demo_prompts(full_description(identity("heldout", person)))
    base_pipe, clone_pipe = _pipes(lora, device, dtype)
    scored = {"base": [], "clone": []}
    rows = []
    for k, (base_prompt, clone_prompt) in enumerate(pairs):
        fb = generate_frames(base_pipe, GenerateConfig(prompt=base_prompt, seed=k))
        fc = generate_frames(clone_pipe, GenerateConfig(prompt=clone_prompt, seed=k))
        gap = np.full((fb.shape[0], fb.shape[1], 2, 3), 255, np.uint8)
        save_clip_outputs(
            np.concatenate([fb, gap, fc], axis=2),
            out / f"base-vs-clone-{k}.mp4",
            overwrite=True,
            meta={"left (base)": base_prompt, "right (clone)": clone_prompt, "seed": k},
        )
        scored["base"].append(score_clip(eyes, fb, base_prompt, refs, self_sim))
        scored["clone"].append(score_clip(eyes, fc, clone_prompt, refs, self_sim))
        rows += [fb, fc]
    real = np.stack(
        [np.asarray(Image.open(p).convert("RGB")) for p in sorted(photos.glob("*.png"))[:9]]
    )
    _overview(out / "overview.png", [real, *rows])
    summary = {k: summarise(v) for k, v in scored.items()}
    report = {
        "person": person,
        "trigger": TRIGGER,
        "lora": str(lora),
        "seconds": round(time.time() - t0, 1),
        "reference_self_similarity": self_sim,
        "summary": summary,
        "clips": scored,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print("4/4 measured with cameo's eyes (identity normalised to real photos = 1.0):")
    _print_table(summary)
    print(
        f"done in {report['seconds']:.0f} s. Side-by-side clips (base left, clone right) and overview.png are in {out}/"
    )
    return report


def _pipes(lora: Path, device: str, dtype: str):
    """The base model, and a copy with the clone's LoRA fused in, both on ``device``."""
    where = GenerateConfig(prompt="-", device=device, dtype=dtype)
    base, _ = load_for(where)
    clone, _ = load_for(replace(where, lora=[str(lora)], fuse=True))
    return base, clone


def _overview(path: Path, clips: list[np.ndarray]) -> None:
    """Real photos on the first row, then base / clone rows alternating."""
    sheets = [
        np.asarray(contact_sheet(c if len(c) < 10 else c[::2], columns=9, scale=1)) for c in clips
    ]
    width = max(s.shape[1] for s in sheets)
    padded = [
        np.pad(s, ((0, 4), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in sheets
    ]
    img = Image.fromarray(np.concatenate(padded))
    write_png(img.resize((img.width * 2, img.height * 2), Image.NEAREST), path)


def _print_table(summary: dict) -> None:
    print(f"    {'model':8s} {'identity':>9s} {'identified':>11s} {'prompt fidelity':>16s}")
    for name, s in summary.items():
        print(
            f"    {name:8s} {s.get('identity_normalised', float('nan')):9.3f} "
            f"{s.get('identification_rate', float('nan')):11.2f} {s.get('prompt_fidelity', float('nan')):16.2f}"
        )
