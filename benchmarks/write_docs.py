"""Render docs/quality.md from the JSON the benchmarks wrote.

    .venv/bin/python benchmarks/write_docs.py

Numbers are never typed by hand: each table cell comes from docs/*.json. (docs/measurement.md
quotes the eyes' own report, src/cameo/assets/eyes/report.json, with its provenance.)
"""

from __future__ import annotations

import json
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


READING_CAP = [
    "Until session 5 the VAE capped every identity number. The identity encoder identifies every",
    "held-out render as rendered (top-1 1.000 among 100); after one encode/decode through the previous",
    "cameo-tiny's VAE (8x8x8 latents) the same renders were identified in only 0.275 of photos and",
    "0.300 of clips, so no clone drawn through it could reach the 0.9 target. This section is how",
    'that was found and fixed; "shipped" in its tables (written before session 5) means that',
    "previous model. The shipped VAE now keeps 0.85 / 0.85 (first table; 0.875 / 0.70 in",
    "sessions 5-7, before its decoder stage was continued from 300 to 900 steps in session 8).",
    "",
    "Two ways out were measured in session 4 on the CPU:",
    "",
    "- Fine-tuning the previous decoder alone (encoder frozen, so its transformer would stay",
    "  valid), 200 steps of 8 photos (+ a 17-frame clip every other step) at lr 3e-4 with L1 + MSE",
    "  (and, in a second run, an image-gradient L1 term too): held-out PSNR 22.53 -> 22.45 / 22.47 dB",
    "  and round-trip identification 0.25 -> 0.125 in both runs, on 32 photos of 8 people. It does not",
    "  help, which says the identity is lost in these 8x8x8 latents, not only in the decoder. (An",
    "  ad-hoc script, not kept; the result is why the decoder route was dropped.)",
    "- A new VAE shape. Trained from scratch for the same number of steps:",
]
READING_STEPS = [
    "How the session-6 defaults were chosen (person 11, and 13 where named; one seed, 4 clips",
    "each, so one clip is 0.25 of identification; from the runs' logs, whose JSON was not kept):",
    "",
    "- Identity during one 1000-step run (`cameo world person --seed 11 --out p11`, then",
    "  `cameo train --data p11 --trigger mike --out r --steps 1000 --validate-every 100`; the",
    "  captions then named a hat 60% and a shirt 45% of the time): identity 0.422, 0.403, 0.444,",
    "  0.422, 0.410, 0.446 at steps 100-600. It is reached by step 100 and does not grow.",
    "- Steps at the final captions (`clone_quality.py --people 1 --first P --seeds 1 --set",
    "  steps=N`): 300 steps: identity 0.574 / 0.607 (persons 11 / 13), 147 / 146 s;",
    "  200 steps: 0.608 / 0.490, 92 / 96 s. 250 is the default: both sides of it are within",
    "  noise of each other, and 300 missed the 120 s target.",
    "- Prior preservation 1.0 instead of 0.5 at 200 steps: identity 0.562 / 0.437, leakage",
    "  -0.055 / +0.178 (0.5: -0.032 / +0.218); not better. Class word `a man` for person 12",
    "  (2 seeds): leakage +0.093 against +0.127 and identification 0.75 against 0.875; the",
    "  prompt that leaks (below) still rose by +0.54.",
    "- Generation settings for person 14's default LoRA (2 seeds): guidance 2 / 5 / 8:",
    "  identity 0.315 / 0.309 / 0.245; 40 sampling steps 0.315; LoRA scale 1.3: 0.090.",
    "  Rank 32 with `--ffn`: 0.368 and identification 0.375 (0.125 at the defaults), in 129 s.",
    "",
    "Leakage comes mostly from one prompt: with every person's LoRA, `a man with short black",
    "hair, speaking, in front of a grey wall` moves towards the person (at the session-6 targets",
    "+0.12 to +0.58 across the five people; at the session-7 targets +0.03 to +0.60), while the",
    "other three prompts move both ways (per-prompt values are in the JSON files,",
    "`leakage_by_prompt`).",
    "",
    "Session 7 changed the default targets to all of self-attention plus the cross-attention keys",
    "and values (`attn1.to_q,attn1.to_k,attn1.to_v,attn1.to_out.0,attn2.to_k,attn2.to_v`): the",
    "cross-attention query and output projections act on every prompt alike. The first run of it",
    "(`--set targets=...` at the commit before the change) and the rerun at the new defaults above",
    "gave the same numbers to the last digit (one torch thread per process; training times aside),",
    "so the benchmark is deterministic on this machine.",
    "",
    "Session 8 continued the decoder stage from 300 to 900 steps (the transformer and the training",
    'code unchanged; "What caps identity" below). With the same defaults, people, prompts and seeds',
    "(the 250-step row and the session-7 row of the table above): identity / self-similarity 0.574 -> 0.605 (four of five",
    "people up), identification 0.650 -> 0.575 (persons 14 and 15 down by 1 and 2 clips of 8, the",
    "others unchanged), leakage +0.043 -> +0.041, fidelity ratio 1.00 -> 1.03. The identification",
    "change is within one or two clips a person; the continuous identity moved up. Training took",
    "171 s a person against 104 s with byte-identical training code and transformer: this session's",
    "machine of the same kind was slower throughout (the decoder stage ran 4.7-5.2 s a step on one",
    "thread against 2.1 s in session 4), so the training-time row measures the machine as much as cameo.",
    "",
    "Session 9 reran the 250-step defaults with `--work runs/cq9` (docs/trials/clone_defaults_session9.json):",
    "every number but the training time equals the 250-step row's to the last digit, training took",
    "173-190 s a person (two people at a time), and the kept LoRAs were then generated again with",
    '`--gen "negative=a person"` (the second row): CFG pushed away from a generic person did not',
    "sharpen the clones (identification 0.575 -> 0.375, leakage +0.041 -> +0.139; person 15 rose",
    "from 5 to 8 of 8 clips, persons 11, 13 and 14 fell to 0), so the default negative prompt stays",
    "empty.",
    "",
    "Session 11 cut the default from 250 to 200 steps (validated at steps 100 and 200 instead of",
    "100, 200 and 250), for the 2-minute training target. Identity is reached by step 100 (above),",
    "and the best checkpoint was the same step in both settings for the two people timed. Quality",
    "(first two rows of the table): identification 0.575 -> 0.550 (one clip of 40: persons 11 and 15",
    "down one clip, 14 up one), identity / self-similarity 0.605 -> 0.589, leakage +0.041 -> +0.049,",
    "fidelity ratio 1.03 -> 1.00; all within the one-clip noise of this benchmark. Training time,",
    "measured side by side on this machine (two `cameo train` runs at once, one thread each, on the",
    "photos of persons 11 and 13, 250 and 200 steps in the same pair so both saw the same load):",
    "250 steps 124 / 127 s, 200 steps 99 / 103 s (the LoRA file's `train_seconds`: loading,",
    "caching, training, validating, saving; 112-115 s of wall time with Python start-up). The first",
    "row's 91 s mean ran two people at a time too. Session 8-9's 171-180 s for 250 steps came",
    "from a slower machine of the same kind, so the step change saves about 20%, and the rest of",
    "the gap to the target was the machine. The first row ran as `--set steps=200` before the",
    "default changed, written to trials/clone_steps200.json and then moved to clone_quality.json;",
    "at the new defaults `python benchmarks/clone_quality.py --people 5 --seeds 2 --jobs 2` trains",
    "the same LoRAs.",
    "",
]

READING_NEXT = [
    "The 4x shape (16x16x8 latents, 4x the values per frame) is 4.0 dB ahead of the previous shape",
    "on photos at 400 steps and already carries some identity (similarity 0.34 vs 0.15). Both are",
    "poor on 17-frame clips at this point: the pilot trains on 5-frame clips, as the previous VAE's",
    "first stage did (its decoder stage later fixed 17-frame decoding). `configs/cameo-tiny/next-4x.toml`",
    "holds this shape; `cameo pretrain --architecture configs/cameo-tiny/next-4x.toml` trains it and a",
    "transformer on its latents (2x2 patches: 64 tokens a photo instead of 16).",
]
READING_RUN = [
    "Session 4 trained that VAE in full on this machine's CPU (one thread, the other core busy): the",
    "VAE stage for 4,000 steps (82.3 min), then the decoder stage on 17-frame clips for 300 steps",
    "(10.7 min), 93 of the 150 CPU minutes the foundation issue allows for the whole pretraining. The",
    "run is kept in the repo, `pretrain/next-4x/` (its README has the commands). Against the previous",
    "VAE, on the same held-out sets:",
]

READING_DECODER = [
    "Session 8 continued that decoder stage from 300 to 900 steps (52 min on this CPU; the encoder",
    "stays frozen, so the latents and the transformer trained on them are unchanged;",
    'pretrain/next-4x/README.md has the commands). "Shipped" in this table is the decoder at',
    "300 steps, shipped in sessions 5-7; the 900-step decoder is the one shipped since:",
]

READING_TRIAL = [
    "A transformer was then trained on this VAE's latents on the CPU from scratch within the rest of",
    "the 150-minute budget (latent cache 8 min, then 1,635 steps of batch 32 planned into 38 min: 52k",
    "samples against the previous transformer's 857k). It was far too weak to ship (the third",
    "column below). Session 5 instead started the transformer from the previous cameo-tiny's",
    "(`cameo pretrain --init-transformer cameo-tiny`: same shape, though trained on the other VAE's",
    "latents) and fine-tuned it on the new latents for 3,600 steps of batch 32 on the CPU (64 min,",
    "115k samples; pretrain/next-4x/README.md). In a 100-step A/B on the same batches the warm start",
    "reached a loss of 0.658 (lr 5e-4) and 0.625 (lr 1e-3) over steps 50-99 against 0.938 from scratch.",
    "That model was the shipped cameo-tiny in sessions 5-7 (the second column). The first column is",
    "the same transformer with the session-8 decoder, shipped since; each column's weights were",
    "byte-identical to `runs/next4x/cameo-tiny`, which its command names, and each JSON file was",
    "renamed to base_quality.json while its model shipped (the earlier one is base_quality_session5.json).",
    'The column "shipped, guidance 3" is the shipped model sampled at classifier-free guidance 3',
    "instead of the default 5 (`--gen guidance=3`, session 9, docs/trials/base_guidance3.json): famous",
    "top-1 0.45 -> 0.525 (3 more of 40), held-out people described in text 0.20 -> 0.30, prompt",
    "following unchanged (0.794; glasses one clip up, speaking one down). The default stayed 5 because",
    "the clone, the product, did not follow: the same benchmark at guidance 3 (`python",
    "benchmarks/clone_quality.py --people 5 --seeds 2 --gen guidance=3`, stopped after its first",
    "person to free the core for the composition study, so no JSON was kept) identified person 11 in",
    "3 of 8 clips against 6 of 8 at guidance 5 (identity 0.669 against 0.702).",
]

READING = [
    "- The shipped cameo-tiny changed in session 5 (section above): its VAE keeps 0.875 of held-out",
    "  photos identifiable, against 0.275 before, and its transformer reads 64 tokens a photo instead of",
    "  16. Cloning on it, with the same defaults: identification 0.175 -> 0.275, identity / self-similarity",
    "  -0.023 -> 0.314, but prompt fidelity clone / base 1.040 -> 0.862 (target 0.90) and leakage",
    "  +0.016 -> +0.055 (target +0.05), and training took 205 s a person against 96 s (4x the tokens;",
    "  one thread, the other core running another benchmark; target 120 s). Both benchmarks name",
    "  `runs/next4x/cameo-tiny`, byte-identical to the shipped model; their JSON files were renamed",
    "  to base_quality.json and clone_quality.json when it shipped.",
    "- The base model, given the full text description, now draws the person closely (identity 0.39 on",
    "  average, 0.72 for person 11) while still identifying them rarely (0.10, target <= 0.30). The clone",
    "  called by its trigger alone is often further from the person than that description: the photos'",
    "  captions name the person's traits, so the traits stay tied to those words and the trigger learns",
    "  little. With a trigger that is not a (male) first name, person 11's clone identity rose 0.131 ->",
    "  0.465 (`--people 1 --first 11 --seeds 1 --trigger zorbl`, not kept as a file), still not identified.",
    "  `cameo train --trigger-only 0.3` (a share of samples captioned with the trigger alone) was tried",
    "  on two people (`--people 1 --first N --seeds 1 --set trigger_only=0.3`, not kept): person 13's",
    "  clone was identified in 2 of 4 clips (1 of 8 with the defaults) at identity 0.564 (0.539) but",
    "  leaked more (+0.172 against +0.107); person 11's identity fell to -0.159 (0.131). It stays off.",
    "- Prompt following and fidelity are read by the session-3 attribute probes (every head >= 0.95",
    "  on held-out renders, docs/measurement.md).",
    "- Prior preservation (the base model's own prediction kept for the trigger-free class prompt, as",
    "  ai-toolkit's differential output preservation does) at weight 0.5 is the default: on the previous",
    "  model it cut leakage +0.133 -> +0.016 and raised fidelity 0.936 -> 1.040 against it off.",
]


def _load(name: str) -> dict | None:
    p = DOCS / name
    return json.loads(p.read_text()) if p.is_file() else None


def _ok(value: float, target: float, higher: bool = True) -> str:
    met = value >= target if higher else value <= target
    return "met" if met else f"missed by {abs(value - target):.3g}"


def _vae_identity_rows(v: dict | None) -> list[str]:
    if not v:
        return []
    return [
        f"| identity through the VAE: held-out renders identified among 100, as rendered | {v['rendered_top1']:.3f} | | |",
        f"| the same after a VAE round trip, photos / 17-frame clips (the cap on any clone) | {v['vae_photos_top1']:.3f} / {v['vae_clips_top1']:.3f} | | |",
        f"| identity similarity to the person, rendered / VAE photos / VAE clips | {v['rendered_similarity']:.3f} / {v['vae_photos_similarity']:.3f} / {v['vae_clips_similarity']:.3f} | | |",
    ]


def _variant_rows(default: dict, variants: list[tuple[str, dict | None]]) -> list[str]:
    """The same benchmark with training settings changed, beside the defaults."""
    variants = [(name, v) for name, v in variants if v]
    if not variants:
        return []
    cols = [
        ("clone_identification", "identification", ".3f"),
        ("clone_identity", "identity / self-similarity", ".3f"),
        ("fidelity_ratio", "fidelity clone / base", ".3f"),
        ("leakage", "leakage", "+.4f"),
        ("train_seconds", "train s", ".0f"),
    ]
    rows = [("defaults", default), *variants]
    out = [
        "The same benchmark with other training settings or on the previous cameo-tiny (same people,",
        "scene prompts, seeds and probes; the previous model's rows ran on an Intel Xeon, whose",
        "training times are not comparable, and before session 6 every row's photos were captioned",
        "with the person's traits; every row but the first ran before session 8 continued the decoder",
        "stage, so each reproduces at the commit in its JSON file, as the session-6 and -7 rows say):",
        "",
        "| setting | "
        + " | ".join(h for _, h, _ in cols)
        + " | per person identification (11-15) | command |",
        "|---|" + "---|" * (len(cols) + 2),
    ]
    for name, r in rows:
        per = " / ".join(f"{x['clone_identification']:.2f}" for x in r["people"])
        cells = " | ".join(f"{r['mean'][k]:{f}}" for k, _, f in cols)
        out.append(f"| {name} | {cells} | {per} | `{r.get('reproduce', r['command'])}` |")
    return [*out, ""]


# Single-person trials (docs/trials/*.json: clone_quality.py runs with one setting changed), in
# groups: the heading, the trial files, and the default run (docs/*.json) each one changed.
TRIAL_GROUPS = [
    (
        [
            "Trials on one person at a time in session 6 (2 seeds, so one clip in 8 is 0.125 of",
            "identification; each beside the same person in the session-6 default run, which adapted",
            "every attention projection):",
        ],
        [
            "caption_dropout_0_12",
            "cross_attention_kv_12",
            "prior_generated_12",
            "trigger_anna_11",
            "trigger_zorbl_11",
        ],
        "clone_quality_session6.json",
    ),
    (
        [
            "Trials in session 8, on the cameo-tiny of sessions 5-7 (its decoder after 300 steps of the",
            "decoder stage), beside the same person in the session-7 default run; each ran beside the",
            "decoder stage's training on the other core, so their training times are not comparable:",
        ],
        ["trigger_anna_15", "ffn_13", "ffn_14"],
        "clone_quality_session7.json",
    ),
]


def _trial_rows() -> list[str]:
    """Each trial beside the same person's row of the default run it changed."""
    out = []
    for heading, names, default_name in TRIAL_GROUPS:
        default = _load(default_name)
        trials = [DOCS / "trials" / f"{n}.json" for n in names]
        if not default or not all(t.is_file() for t in trials):
            continue
        base = {r["person"]: r for r in default["people"]}
        out += [
            *heading,
            "",
            "| trial | person | identification (default) | identity (default) | leakage (default) | train s | command |",
            "|---|---|---|---|---|---|---|",
        ]
        for path in trials:
            t = json.loads(path.read_text())
            for r in t["people"]:
                d = base.get(r["person"], {})
                out.append(
                    f"| {path.stem} | {r['person']} | {r['clone_identification']:.3f} ({d.get('clone_identification', float('nan')):.3f}) | "
                    f"{r['clone_identity']:.3f} ({d.get('clone_identity', float('nan')):.3f}) | "
                    f"{r['leakage']:+.3f} ({d.get('leakage', float('nan')):+.3f}) | {r['train_seconds']:.0f} | `{t.get('reproduce', t['command'])}` |"
                )
        out.append("")
    return out


def _pilot_rows(pilot: dict | None) -> list[str]:
    if not pilot:
        return []
    out = [
        "`python benchmarks/vae_pilot.py [--architecture FILE]` (each shape from scratch, the VAE",
        "stage's data, loss and learning rate, one thread; identity as in the table above, 8 people x 3):",
        "",
        "| VAE shape | latents of a 64x64 frame | steps | minutes | PSNR photos | PSNR 17-frame clips | identity sim. through it, photos | top-1, photos |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in pilot["rows"]:
        v, f = r["vae"], 2 ** (len(r["vae"]["dim_mult"]) - 1)
        lat = f"{64 // f}x{64 // f}x{v['z_dim']}"
        out.append(
            f"| {r['architecture']} | {lat} | {r['steps']} | {r['minutes']} | {r['psnr_photos_db']:.2f} dB | "
            f"{r['psnr_clips_db']:.2f} dB | {r['identity']['vae_photos_similarity']:.3f} | {r['identity']['vae_photos_top1']:.3f} |"
        )
    return [*out, ""]


def _run_vae_rows(vq: dict | None) -> list[str]:
    """A pretraining run's VAE beside the shipped one (benchmarks/vae_quality.py)."""
    if not vq:
        return []
    out = [
        f"`{vq['command']}` — commit {vq['commit']}, {vq['date']}; the held-out sets of the first table:",
        "",
        "| VAE | PSNR photos | PSNR 17-frame clips | identified after a round trip, photos / clips | identity similarity, photos / clips |",
        "|---|---|---|---|---|",
    ]
    for r in vq["rows"]:
        i = r["identity"]
        out.append(
            f"| {r['vae']} | {r['psnr_photos_db']:.2f} dB | {r['psnr_clips_db']:.2f} dB | "
            f"{i['vae_photos_top1']:.3f} / {i['vae_clips_top1']:.3f} | "
            f"{i['vae_photos_similarity']:.3f} / {i['vae_clips_similarity']:.3f} |"
        )
    return [*out, ""]


BASE_ROWS = [
    ("VAE PSNR, held-out photos (dB)", lambda r: r["vae"]["psnr_photos_db"], ".2f"),
    ("VAE PSNR, held-out 17-frame clips (dB)", lambda r: r["vae"]["psnr_clips_db"], ".2f"),
    (
        "identified after a VAE round trip, photos",
        lambda r: r["vae_identity"]["vae_photos_top1"],
        ".3f",
    ),
    (
        "identified after a VAE round trip, clips",
        lambda r: r["vae_identity"]["vae_clips_top1"],
        ".3f",
    ),
    ("prompt following, mean of four", lambda r: r["prompt_following"]["mean_agreement"], ".3f"),
    ("hair colour agrees", lambda r: r["prompt_following"]["hair_agreement"], ".3f"),
    ("background agrees", lambda r: r["prompt_following"]["background_agreement"], ".3f"),
    ("glasses agree", lambda r: r["prompt_following"]["glasses_agreement"], ".3f"),
    ("speaking vs silent agrees", lambda r: r["prompt_following"]["speaking_agreement"], ".3f"),
    ("famous top-1", lambda r: r["famous"]["famous_top1"], ".3f"),
    ("held-out described top-1", lambda r: r["heldout"]["heldout_described_top1"], ".3f"),
]


def _base_compare_rows(lead: list[str], columns: list[tuple[str, dict | None]]) -> list[str]:
    """base_quality.py reports of several pipelines side by side, each with its command."""
    columns = [(name, r) for name, r in columns if r]
    if len(columns) < 2:
        return []
    out = [*lead, "", "| what | " + " | ".join(n for n, _ in columns) + " |"]
    out.append("|---|" + "---|" * len(columns))
    for label, get, fmt in BASE_ROWS:
        out.append(f"| {label} | " + " | ".join(f"{get(r):{fmt}}" for _, r in columns) + " |")
    out.append("")
    out += [
        f"- {n}: `{r['command']}` ({r['machine']}, commit {r['commit']}, {r['date']})"
        for n, r in columns
    ]
    return [*out, ""]


def quality_md() -> str:
    base, clone = _load("base_quality.json"), _load("clone_quality.json")
    pilot, run_vae = _load("vae_pilot.json"), _load("vae_quality.json")
    session6 = _load("clone_quality_session6.json")
    variants = [
        (
            "sessions 8-9 defaults: 250 steps (validated at 100, 200, 250); train s from session 8's slower machine",
            _load("clone_quality_250steps.json"),
        ),
        (
            "session 9: the 250-step LoRAs (reused with --work), generated with the negative prompt 'a person'",
            _load("trials/clone_negative_a_person.json"),
        ),
        (
            "session 7: the same defaults on the decoder of sessions 5-7 (300 decoder-stage steps)",
            _load("clone_quality_session7.json"),
        ),
        (
            "session 6 defaults: LoRA on to_q, to_k, to_v, to_out.0 of both attentions",
            session6,
        ),
        (
            "LoRA on the cross-attention keys and values only (attn2.to_k, attn2.to_v)",
            _load("clone_quality_xattn_kv.json"),
        ),
        (
            "session 5 defaults: captions describing the person, 500 steps",
            _load("clone_quality_described.json"),
        ),
        ("previous cameo-tiny (8x8x8 VAE), defaults", _load("clone_quality_8x.json")),
        ("previous cameo-tiny, prior preservation off", _load("clone_quality_pp0.json")),
        ("previous cameo-tiny, prior preservation 1.0", _load("clone_quality_pp1.0.json")),
        ("previous cameo-tiny, --ffn, prior preservation off", _load("clone_quality_ffn.json")),
    ]
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
            *_vae_identity_rows(base.get("vae_identity")),
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
            *_variant_rows(clone, variants),
            *_trial_rows(),
            *READING_STEPS,
        ]
    out += ["## What caps identity", "", *READING_CAP, "", *_pilot_rows(pilot), *READING_NEXT, ""]
    out += [*READING_RUN, "", *_run_vae_rows(run_vae)] if run_vae else []
    longer = _load("vae_quality_decoder900.json")
    out += [*READING_DECODER, "", *_run_vae_rows(longer)] if longer else []
    out += _base_compare_rows(
        READING_TRIAL,
        [
            ("shipped: new VAE, warm-started transformer, decoder 900 steps", base),
            ("shipped, guidance 3", _load("trials/base_guidance3.json")),
            ("sessions 5-7: the same, decoder 300 steps", _load("base_quality_session5.json")),
            ("previous: 8x8x8 VAE, H200 transformer", _load("base_quality_8x.json")),
            ("CPU trial: new VAE, transformer from scratch", _load("base_quality_next4x.json")),
        ],
    )
    out += ["## Reading these numbers", "", *READING, ""]
    return "\n".join(out) + "\n"


def main() -> None:
    (DOCS / "quality.md").write_text(quality_md())
    print("wrote docs/quality.md")


if __name__ == "__main__":
    main()
