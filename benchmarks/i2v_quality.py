"""Image-to-video cloning on the built-in cameo-tiny-i2v, measured with cameo's eyes.

    .venv/bin/python benchmarks/i2v_quality.py [--people 3] [--first 21] [--seeds 2] [--work DIR]

For each held-out person: 20 captioned photos and 4 captioned 17-frame clips; a LoRA trained on
cameo-tiny-i2v with the default settings (timed); then ``cameo eval`` twice, each with and
without the LoRA and on the world's default prompts:
  own      = clips starting from 4 photos of the person that training never saw;
  stranger = clips starting from 4 photos of another held-out person (the next index).
The eyes judge the frames the model drew, after the given first one. "own" asks whether the
face holds as the clip moves on; "stranger" whether the LoRA pulls someone else's first frame
towards the person (or the first frame wins). Writes docs/i2v_quality.json. With --work, each
person's folder (p<N>/) keeps the LoRA and the row: a rerun trains and measures only what is
missing.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cameo.data.world_folders import write_person_folder
from cameo.metrics.evaluate import Eyes, eval_lora
from cameo.training import TrainConfig, run_training
from common import write_json

TRIGGER = "mike"
BASE = "cameo-tiny-i2v"
PHOTOS, CLIPS, STARTS = 20, 4, 4


def start_photos(person: int, out: Path) -> Path:
    """``STARTS`` photos of ``person`` that the training folder does not hold: photos
    ``PHOTOS``.. of the same generator (each photo is a pure function of person and index)."""
    with tempfile.TemporaryDirectory() as tmp:
        every = write_person_folder(person, Path(tmp) / "all", PHOTOS + STARTS)
        out.mkdir(parents=True)
        for i in range(PHOTOS, PHOTOS + STARTS):
            shutil.copy(every / f"photo_{i:03d}.png", out / f"photo_{i:03d}.png")
    return out


def scores(report: dict, variant: str) -> dict:
    s = report["summary"]["subject"][variant]
    keys = ("identity_normalised", "identification_rate", "prompt_fidelity")
    return {k: s.get(k) for k in keys}


def one_person(person: int, seeds: int, work: Path, eyes: Eyes) -> dict:
    """Train (or reuse the LoRA in ``work``) and measure one person; the row is kept there."""
    done = work / f"row-s{seeds}.json"
    if done.is_file():
        return json.loads(done.read_text())
    photos, own, stranger = work / "photos", work / "own", work / "stranger"
    lora = work / "run" / f"{TRIGGER}.safetensors"
    if not lora.is_file():
        for folder in (photos, own, stranger):
            shutil.rmtree(folder, ignore_errors=True)
        write_person_folder(person, photos, PHOTOS, clips=CLIPS)
        start_photos(person, own)
        start_photos(person + 1, stranger)
        cfg = TrainConfig.from_options(
            data=str(photos), trigger=TRIGGER, name=TRIGGER, out=str(work / "run"), base=BASE
        )
        run_training(cfg, log=lambda m: None)
    # the trainer's own clock: the optimisation loop, validation included
    train_s = json.loads((work / "run" / "metrics.json").read_text())["train_seconds"]
    row: dict = {"person": person, "train_seconds": train_s}
    for name, starts in (("own", own), ("stranger", stranger)):
        report = eval_lora(
            eyes, lora, photos, base=BASE, seeds=seeds, identity="world", first_frames=starts
        )
        row[name] = {"lora": scores(report, "lora"), "base": scores(report, "base")}
        row[name]["leakage"] = report["summary"].get("leakage")
    done.write_text(json.dumps(row, indent=1))
    print(row, flush=True)
    return row


def mean(rows: list[dict], start: str, variant: str, key: str) -> float:
    vals = [r[start][variant][key] for r in rows if r[start][variant][key] is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--people", type=int, default=3)
    ap.add_argument("--first", type=int, default=21, help="first held-out person index")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--json", default="i2v_quality.json", help="file name under docs/")
    ap.add_argument("--work", default="", help="keep each person's LoRA and row here")
    args = ap.parse_args()
    eyes = Eyes()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        for person in range(args.first, args.first + args.people):
            rows.append(one_person(person, args.seeds, work / f"p{person}", eyes))
    keys = ("identity_normalised", "identification_rate", "prompt_fidelity")
    summary = {
        start: {v: {k: mean(rows, start, v, k) for k in keys} for v in ("lora", "base")}
        for start in ("own", "stranger")
    }
    out = {
        "command": "python benchmarks/i2v_quality.py " + shlex.join(sys.argv[1:]),
        "base": BASE,
        "people": list(range(args.first, args.first + args.people)),
        "summary": summary,
        "rows": rows,
    }
    write_json(args.json, out)
    print(summary)


if __name__ == "__main__":
    main()
