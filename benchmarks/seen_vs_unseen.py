"""Is a clone held back by memorising its photos, or by what the base model can draw?

    .venv/bin/python benchmarks/seen_vs_unseen.py --work runs/cq_t8y --people 11,13,15

For the LoRAs a kept ``clone_quality.py --work`` folder holds: identification and identity of the
clone prompted with four of its own photos' captions (scenes it was trained on) against four
scenes its photos never show, 2 seeds each (seeds 0 and 1, not clone_quality's). Prints one line
a person; nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cameo.data import apply_trigger
from cameo.generation import GenerateConfig, generate_frames
from cameo.metrics.evaluate import Eyes, load_references, score_clip, summarise
from cameo.metrics.scores import self_similarity
from cameo.models import load_pipeline
from clone_quality import TRIGGER, unseen_scenes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="a clone_quality.py --work folder")
    ap.add_argument("--base", default="cameo-tiny", help="the base its LoRAs were trained on")
    ap.add_argument("--people", default="11,12,13,14,15")
    ap.add_argument("--seeds", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    eyes = Eyes()
    for person in (int(p) for p in args.people.split(",")):
        photos = Path(args.work) / f"p{person}" / "photos"
        refs = eyes.embed(load_references(photos))
        self_sim = self_similarity(refs)
        pipe = load_pipeline(args.base)
        lora = Path(args.work) / f"p{person}" / "lora" / f"{TRIGGER}.safetensors"
        pipe.load_lora_weights(str(lora), adapter_name="subject")
        seen = [  # as training read them
            apply_trigger((photos / f"photo_{i:03d}.txt").read_text().strip(), TRIGGER)
            for i in range(0, 20, 5)
        ]
        unseen = [f"{TRIGGER}, {scene}" for scene in unseen_scenes(photos)]
        row = {}
        for name, prompts in (("seen", seen), ("unseen", unseen)):
            scores = [
                score_clip(
                    eyes,
                    generate_frames(pipe, GenerateConfig(prompt=p, seed=s)),
                    p,
                    refs,
                    self_sim,
                )
                for p in prompts
                for s in range(args.seeds)
            ]
            s = summarise(scores)
            row[name] = (s["identification_rate"], round(s["identity_normalised"], 3))
        print(person, row, flush=True)


if __name__ == "__main__":
    main()
