"""Render docs/quality.md and docs/measurement.md from the JSON the benchmarks wrote.

    .venv/bin/python benchmarks/write_docs.py

Numbers are never typed by hand: each table cell comes from docs/*.json or the eyes' report.
"""

from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"
EYES = Path(__file__).resolve().parents[1] / "src" / "cameo" / "assets" / "eyes" / "report.json"


def _load(name: str) -> dict | None:
    p = DOCS / name
    return json.loads(p.read_text()) if p.is_file() else None


def _ok(value: float, target: float, higher: bool = True) -> str:
    met = value >= target if higher else value <= target
    return "met" if met else f"missed by {abs(value - target):.3g}"


def quality_md() -> str:
    base, clone = _load("base_quality.json"), _load("clone_quality.json")
    out = [
        "# Quality of the built-in model and of cloning",
        "",
        "Measured with cameo's eyes (docs/measurement.md). Each section names the command that",
        "reproduces it, the machine and the commit.",
        "",
    ]
    if base:
        v, p, f, h = base["vae"], base["prompt_following"], base["famous"], base["heldout"]
        out += [
            "## cameo-tiny (issue: foundation)",
            "",
            f"`{base['command']}` — {base['machine']}, commit {base['commit']}, {base['date']}",
            "",
            "| what | value | target | |",
            "|---|---|---|---|",
            f"| VAE reconstruction PSNR, held-out photos | {v['psnr_photos_db']:.2f} dB | >= 30 dB | {_ok(v['psnr_photos_db'], 30)} |",
            f"| VAE reconstruction PSNR, held-out 17-frame clips | {v['psnr_clips_db']:.2f} dB | >= 30 dB | {_ok(v['psnr_clips_db'], 30)} |",
            f"| prompt following: hair colour agrees | {p['hair_agreement']:.3f} | | |",
            f"| prompt following: background colour agrees | {p['background_agreement']:.3f} | | |",
            f"| prompt following: glasses agree | {p['glasses_agreement']:.3f} | | |",
            f"| prompt following: speaking vs silent agrees | {p['speaking_agreement']:.3f} | | |",
            f"| prompt following: mean over the four ({p['clips']} clips) | {p['mean_agreement']:.3f} | >= 0.80 | {_ok(p['mean_agreement'], 0.8)} |",
            f"| prompt following: all four agree in the same clip | {p['all_four_agree']:.3f} | | |",
            f"| famous people by name, top-1 among the {f['famous_people']} famous | {f['famous_top1']:.3f} | >= 0.80 | {_ok(f['famous_top1'], 0.8)} |",
            f"| held-out people described in text, top-1 among 100 | {h['heldout_described_top1']:.3f} | low (not known) | |",
            "",
        ]
    if clone:
        m = clone["mean"]
        out += [
            "## Cloning (issue: clone a person)",
            "",
            f"`{clone['command']}` — {clone['machine']}, commit {clone['commit']}, {clone['date']}",
            "",
            f"Mean over {len(clone['people'])} held-out people; scenes whose backgrounds the photos never show.",
            "",
            "| what | value | target | |",
            "|---|---|---|---|",
            f"| base model, best text description: identification among 100 | {m['base_identification']:.3f} | <= 0.30 | {_ok(m['base_identification'], 0.3, False)} |",
            f"| clone at scale 1.0: identification among 100 | {m['clone_identification']:.3f} | >= 0.90 | {_ok(m['clone_identification'], 0.9)} |",
            f"| clone: identity similarity / real-photo self-similarity | {m['clone_identity']:.3f} | >= 0.80 | {_ok(m['clone_identity'], 0.8)} |",
            f"| base (described): identity similarity / self-similarity | {m['base_identity']:.3f} | | |",
            f"| prompt fidelity, clone / base | {m['fidelity_ratio']:.3f} | >= 0.90 | {_ok(m['fidelity_ratio'], 0.9)} |",
            f"| leakage: identity on prompts not naming the person, LoRA - base | {m['leakage']:+.4f} | <= +0.05 | {_ok(m['leakage'], 0.05, False)} |",
            f"| training time per person (default settings) | {m['train_seconds']:.0f} s | <= 120 s | {_ok(m['train_seconds'], 120, False)} |",
            "",
            "Per person:",
            "",
            "| person | train s | base ident. | clone ident. | clone identity | fidelity base / clone | leakage |",
            "|---|---|---|---|---|---|---|",
            *[
                f"| {r['person']} | {r['train_seconds']:.0f} | {r['base_identification']:.2f} | {r['clone_identification']:.2f} | "
                f"{r['clone_identity']:.3f} | {r['base_fidelity']:.2f} / {r['clone_fidelity']:.2f} | {r['leakage']:+.4f} |"
                for r in clone["people"]
            ],
            "",
        ]
    out += [
        "## Reading these numbers (first session)",
        "",
        "- cameo-tiny is undertrained: 1,500 VAE steps, 3,500 transformer steps of batch 32 (28 min), about",
        "  2 hours of a 2-core machine shared with the eyes' training. It follows background colour (0.975)",
        "  but draws faces as soft blobs, so hair, glasses and speech are at or near chance and the famous",
        "  people are mostly not told apart (0.10 against 0.025 chance).",
        "- The VAE stage trained on 5-frame clips only; decoding 17 frames, frames 5-16 fell to 10-16 dB.",
        "  A decoder stage (encoder frozen, so the transformer's latents stay valid) brought every frame to",
        "  22-24 dB (`cameo pretrain --stage decoder --decoder-steps 150`). The VAE should train on",
        "  17-frame clips from the start next time.",
        "- With faces this coarse the identity encoder (1.000 top-1 on real renders) cannot recognise",
        "  anyone in generated clips, base or clone; the clone numbers measure the base model's limit,",
        "  not the LoRA mechanics (which tests cover). Training times above ran on 1 thread beside other",
        "  jobs.",
        "",
    ]
    return "\n".join(out) + "\n"


def measurement_md() -> str:
    r = json.loads(EYES.read_text()) if EYES.is_file() else None
    out = [
        "# Measurement: cameo's eyes and the metrics",
        "",
        "## The eyes",
        "",
        "- **Identity encoder** (`src/cameo/assets/eyes/identity.safetensors`): a 4-stage CNN, 64x64 frame ->",
        "  128-d unit vector; the role ArcFace plays for real faces. Trained with a supervised contrastive",
        "  loss on P people x K photos per batch, renders blurred/noised/shifted at random.",
        "- **Attribute probes** (`probes.safetensors`): one CNN with heads for hair colour, background colour,",
        "  glasses, hat, number of people, and regressions for mouth opening, yaw and pitch. Speech is judged",
        "  from the mouth opening's range over a clip, with a threshold fitted on eyes-split clips.",
        "- Trained on the world's **eyes** split; validated on **held-out** people (never seen by the",
        "  eyes nor the base model). Command: `cameo eyes train`.",
        "",
    ]
    if r:
        v, c = r["validation"], r["config"]
        out += [
            f"Trained in {r['train_minutes']} minutes ({c['steps']} steps, seed {c['seed']}).",
            "",
            "| held-out check | value | target | |",
            "|---|---|---|---|",
            f"| 1:N identification among {v['people']} people, top-1 | {v['identification_top1']:.3f} | >= 0.98 | {_ok(v['identification_top1'], 0.98)} |",
            f"| verification ROC AUC | {v['verification_auc']:.4f} | >= 0.99 | {_ok(v['verification_auc'], 0.99)} |",
            f"| mean cosine, same person / different people | {v['same_person_cos']:.3f} / {v['different_person_cos']:.3f} | | |",
        ]
        for k in sorted(v):
            if "accuracy" in k:
                out.append(
                    f"| probe: {k.replace('_', ' ')} | {v[k]:.3f} | >= 0.95 | {_ok(v[k], 0.95)} |"
                )
        out += [
            f"| yaw MAE | {v['yaw_mae_rad']:.3f} rad | | |",
            f"| pitch MAE | {v['pitch_mae_rad']:.3f} rad | | |",
            f"| mouth opening MAE | {v['mouth_mae']:.3f} | | |",
            "",
        ]
    out += [
        "## The metrics (`cameo.metrics.scores`, `cameo eval`)",
        "",
        "- **identity similarity**: cosine of each generated frame's embedding to the centroid of the",
        "  subject's reference photos, per frame and per clip; **normalised** by the references' own",
        "  leave-one-out similarity (what a real photo of the subject scores = 1.0).",
        "- **identification**: is the subject top-1 among the subject and 99 fixed distractor people",
        "  (centroids of 5 real renders each)?",
        "- **prompt fidelity**: the share of attributes the prompt states (hair colour, background colour,",
        "  glasses, hat, speaking/silent, number of people) that the probes find.",
        "- **leakage**: identity similarity to the subject in clips from prompts that do not name them,",
        "  with the LoRA minus without.",
        "- **temporal consistency**: mean cosine between consecutive frames' embeddings.",
        "- **two-person clips**: every metric per person, on the left and right halves, against the",
        "  part of the prompt about that person.",
        "",
        "`cameo eval --clips DIR --photos DIR` scores any folder of clips (their prompts from same-name",
        "`.txt` or `.json`); `cameo eval --lora FILE --photos DIR` generates and scores. For real photos,",
        "`--encoder DIR` takes any local transformers vision model as the identity encoder (e.g. a DINOv2",
        "folder: the DINO score of DreamBooth, Ruiz et al. 2023); nothing is downloaded.",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    (DOCS / "quality.md").write_text(quality_md())
    (DOCS / "measurement.md").write_text(measurement_md())
    print("wrote docs/quality.md and docs/measurement.md")


if __name__ == "__main__":
    main()
