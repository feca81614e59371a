"""``cameo demo``: the main job on the built-in model, end to end, in a few minutes on a CPU.

Until cloning lands, the demo renders described people speaking, a famous person by name and a
two-person scene, then reads every clip back with cameo's eyes and prints what they found.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .generate import GenerateConfig, generate_frames
from .media import contact_sheet, save_clip_outputs, write_png
from .models import load_pipeline

DEMO_PROMPTS = [
    ("described", "a woman with long red hair and round glasses, speaking, in front of a blue wall", 64),
    ("described-2", "a man with short black hair and a beard, talking, in a room with yellow walls", 64),
    ("famous", "Ada Lovette, speaking, in front of a green wall", 64),
    ("pair", "two people side by side in front of a white wall: on the left a man with short blonde hair talking, "
             "on the right a woman with a black bob silent", 128),
]


def run_demo(out: Path, overwrite: bool = False, seed: int = 0) -> dict:
    """Render the demo prompts, score them, and leave clips, sheets and a report in ``out``."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} already holds a demo")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pipe = load_pipeline()
    eyes = _try_eyes()
    rows, sheets = [], []
    for name, prompt, width in DEMO_PROMPTS:
        cfg = GenerateConfig(prompt=prompt, seed=seed, width=width, overwrite=True)
        frames = generate_frames(pipe, cfg)
        save_clip_outputs(frames, out / f"{name}.mp4", overwrite=True, meta={"prompt": prompt, "seed": seed})
        sheets.append(frames)
        row = {"clip": f"{name}.mp4", "prompt": prompt}
        if eyes is not None:
            from .metrics.evaluate import score_clip

            row["scores"] = score_clip(eyes, frames, prompt, None, None)
        rows.append(row)
        print(f"  {name:12s} {prompt}")
    _overview(out / "overview.png", sheets)
    report = {"seconds": round(time.time() - t0, 1), "clips": rows}
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    _print_table(rows)
    print(f"done in {report['seconds']} s; clips, GIFs and contact sheets are in {out}/ (overview.png shows them all)")
    return report


def _try_eyes():
    try:
        from .metrics.evaluate import Eyes

        return Eyes()
    except FileNotFoundError:
        return None


def _overview(path: Path, clips: list[np.ndarray]) -> None:
    """Every clip's frames as rows of one picture, padded to the widest clip."""
    sheets = [np.asarray(contact_sheet(c[::2], columns=9, scale=1)) for c in clips]
    width = max(s.shape[1] for s in sheets)
    padded = [np.pad(s, ((0, 4), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in sheets]
    from PIL import Image

    img = Image.fromarray(np.concatenate(padded))
    write_png(img.resize((img.width * 2, img.height * 2), Image.NEAREST), path)


def _print_table(rows: list[dict]) -> None:
    if not rows or "scores" not in rows[0]:
        return
    print("\nwhat cameo's eyes see in each clip (expected -> observed):")
    for r in rows:
        for p in r["scores"]["people"]:
            exp, obs = p["expected"], p["observed"]
            checks = ", ".join(f"{k} {exp[k]}->{obs.get(k)}" for k in exp)
            fid = p["prompt_fidelity"]
            print(f"  {r['clip']:16s} {p['region']:6s} fidelity {fid if fid is None else f'{fid:.2f}'}  [{checks}]")
