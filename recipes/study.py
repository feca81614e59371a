"""The study: the technique's known trade-offs, measured on the built-in model.

    python recipes/study.py --parts rank,scale,full,compose

Four parts, each a table (and a plot) in ``docs/results.md``, all from one command:

- rank: LoRA rank r against trainable parameters, file size, step time, peak memory, identity
  and prompt fidelity;
- scale: the LoRA scale s (W + s·(α/r)·B·A) against identity and prompt fidelity;
- full: LoRA against full fine-tuning of the same transformer on the same photos, including
  what each forgets (prompt fidelity on prompts that do not name the person; famous people);
- compose: two people in one clip by each composition method, beside the overlap that
  ``cameo inspect`` predicts.

Trainings run in child processes (``cameo train``, ``recipes/full_finetune.py``,
``recipes/step_cost.py``) so that each one's peak memory (max RSS) is its own; the training and
sampling settings are ``cameo train`` and ``cameo generate``'s defaults.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import WanTransformer3DModel
from safetensors import safe_open

from cameo.cli.args import add_dataclass_args, dataclass_from_args
from cameo.compose import interference_score, load_modules, overlap
from cameo.data.world_folders import write_person_folder
from cameo.generation import GenerateConfig, apply_loras, generate_frames
from cameo.generation.sampling import initial_noise
from cameo.metrics.evaluate import Eyes, load_references, score_clip, summarise
from cameo.metrics.scores import centroid, self_similarity
from cameo.metrics.stills import random_still
from cameo.models import load_pipeline, resolve_base
from cameo.training import TrainConfig
from cameo.training import checkpoint as ckpt
from cameo.world import FAMOUS
from cameo.world.traits import BACKGROUND_COLOURS
from study_report import write_report

RECIPES = Path(__file__).resolve().parent
TRAIN_MAIN = "import sys; from cameo.cli import main; sys.exit(main())"
PARTS = ("rank", "scale", "full", "compose")
COMPOSE_METHODS = ("linear", "cat", "svd", "ties", "dare_linear", "regional")
# (name, LoRA files: standard or orthogonal, --mix, each region reads its own prompt)
COMPOSE_SETUPS = [(m, "standard", m, False) for m in COMPOSE_METHODS] + [
    ("orthogonal (sum)", "orthogonal", "linear", False),
    ("orthogonal + regional", "orthogonal", "regional", False),
    ("linear + regional prompts", "standard", "linear", True),
    ("regional + regional prompts", "standard", "regional", True),
    ("orthogonal + regional + regional prompts", "orthogonal", "regional", True),
    ("windows + regional prompts", "standard", "windows", True),
]


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x.strip()]


@dataclass
class StudyConfig:
    """Options of the study; recorded in results.json as ``config``."""

    out: str = field(default="docs", metadata={"help": "folder for results.md/.json and plots"})
    work: str = field(default="runs/study", metadata={"help": "folder for photos, LoRAs, logs"})
    parts: str = field(
        default=",".join(PARTS), metadata={"help": "which parts: rank,scale,full,compose"}
    )
    people: str = field(
        default="12,15",
        metadata={
            "help": "two held-out people (world indices): a man, then a woman, as the triggers "
            "(12 and 15 are each identified alone under them; 11 is not under 'anna')"
        },
    )
    triggers: str = field(default="mike,anna", metadata={"help": "their trigger words"})
    ranks: str = field(default="1,2,4,8,16,32,64", metadata={"help": "ranks of the rank sweep"})
    scales: str = field(
        default="0,0.25,0.5,0.75,1,1.25,1.5", metadata={"help": "scales of the scale sweep"}
    )
    rank: int = field(default=16, metadata={"help": "rank of the scale, full and compose parts"})
    steps: int = field(default=250, metadata={"help": "training steps of every run"})
    scenes: int = field(default=3, metadata={"help": "unseen scenes per measurement"})
    famous: int = field(default=8, metadata={"help": "famous people checked for forgetting"})
    full_lrs: str = field(
        default="1e-4",
        metadata={"help": "full part: learning rates of full fine-tuning, one row each"},
    )
    lora_lrs: str = field(
        default="",
        metadata={
            "help": "full part: learning rates of extra LoRA rows beside cameo train's own, to "
            "compare what each forgets at a matched identity (comma list; empty = none)"
        },
    )
    seeds: int = field(default=1, metadata={"help": "seeds per prompt"})
    sample_steps: int = field(default=20, metadata={"help": "sampling steps per clip"})
    base: str = field(default="cameo-tiny", metadata={"help": "base model"})
    methods: str = field(
        default="",
        metadata={
            "help": "compose part: only these setups (comma list of the method names in "
            "results.md); the other rows are kept from the earlier results.json; empty = all"
        },
    )
    overwrite: bool = field(default=False, metadata={"help": "replace earlier study outputs"})

    def validate(self) -> None:
        unknown = set(self.parts.split(",")) - set(PARTS)
        if unknown:
            raise ValueError(f"--parts: unknown {sorted(unknown)}; choose from {PARTS}")
        if len(self.people.split(",")) != 2 or len(self.triggers.split(",")) != 2:
            raise ValueError("--people and --triggers each name exactly two")
        if self.steps < 1 or self.scenes < 1 or self.seeds < 1:
            raise ValueError("--steps, --scenes and --seeds must be at least 1")
        if not _floats(self.full_lrs) or min(_floats(self.full_lrs)) <= 0:
            raise ValueError("--full-lrs: one or more positive learning rates, e.g. 1e-4,1e-3")
        if self.lora_lrs.strip() and min(_floats(self.lora_lrs)) <= 0:
            raise ValueError("--lora-lrs: positive learning rates, e.g. 5e-4,1e-3")
        unknown = set(self.compose_methods()) - {name for name, *_ in COMPOSE_SETUPS}
        if unknown:
            names = ", ".join(name for name, *_ in COMPOSE_SETUPS)
            raise ValueError(f"--methods: unknown {sorted(unknown)}; choose from {names}")

    def compose_methods(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]


# ------------------------------------------------------------------------------ measuring


class Judge:
    """Generates clips for prompts and scores them with cameo's eyes against one person."""

    def __init__(self, cfg: StudyConfig):
        self.cfg, self.eyes = cfg, Eyes()

    def references(self, photos: Path) -> tuple[torch.Tensor, float]:
        refs = self.eyes.embed(load_references(photos))
        return refs, self_similarity(refs)

    def clips(
        self,
        pipe,
        prompts: list[str],
        width: int = 64,
        loaded=None,
        region_prompts: list[list[str]] | None = None,
        pair_side: int | None = None,
    ) -> list[np.ndarray]:
        """Clips of every prompt at every seed; ``region_prompts[k]``: the --region-prompt
        values of prompt k. With ``pair_side`` (0 left, 1 right), each clip starts from that
        half of the noise a two-person clip at the same seed starts from, so a person alone and
        the same person in a pair clip are compared on the same numbers."""

        def config(prompt: str, seed: int, k: int) -> GenerateConfig:
            return GenerateConfig(
                prompt=prompt,
                seed=seed,
                width=width,
                steps=self.cfg.sample_steps,
                base=self.cfg.base,
                region_prompt=region_prompts[k] if region_prompts else [],
            )

        def noise(seed: int) -> torch.Tensor | None:
            if pair_side is None:
                return None
            wide = initial_noise(pipe, replace(config("", seed, 0), width=2 * width))
            half = wide.shape[-1] // 2  # (1, C, F', h, 2·half)
            return wide[..., pair_side * half : (pair_side + 1) * half]

        return [
            generate_frames(pipe, config(p, s, k), loaded, noise=noise(s))
            for k, p in enumerate(prompts)
            for s in range(self.cfg.seeds)
        ]

    def score(self, pipe, prompts: list[str], photos: Path, pair_side: int | None = None) -> dict:
        """Mean identity (normalised), identification rate and prompt fidelity over the clips
        (``pair_side``: as in ``clips``)."""
        refs, self_sim = self.references(photos)
        frames = self.clips(pipe, prompts, pair_side=pair_side)
        ps = [p for p in prompts for _ in range(self.cfg.seeds)]
        s = summarise(
            [score_clip(self.eyes, f, p, refs, self_sim) for f, p in zip(frames, ps, strict=True)]
        )
        return {
            "identity": s.get("identity_normalised"),
            "identification": s.get("identification_rate"),
            "fidelity": s.get("prompt_fidelity"),
        }

    def fidelity(self, pipe, prompts: list[str]) -> float:
        frames = self.clips(pipe, prompts)
        ps = [p for p in prompts for _ in range(self.cfg.seeds)]
        return summarise(
            [score_clip(self.eyes, f, p, None, None) for f, p in zip(frames, ps, strict=True)]
        ).get("prompt_fidelity", float("nan"))

    def famous(self, pipe, n: int) -> dict:
        """Memory the base model should keep, from clips generated from the first n famous
        names alone: ``famous_top1``, the share nearest to their own person's centroid among
        those n; ``famous_similarity``, the mean cosine to it (graded, so a small loss shows
        before a clip changes rank)."""
        rng = random.Random("cameo-study/famous")
        cents = torch.stack(
            [
                centroid(
                    self.eyes.embed(np.stack([random_still("base", i, rng)[0] for _ in range(5)]))
                )
                for i in range(n)
            ]
        )
        hits, sims = [], []
        for i, frames in enumerate(self.clips(pipe, [f"{FAMOUS[k]}, speaking" for k in range(n)])):
            cos = cents @ centroid(self.eyes.embed(frames))  # (n,)
            hits.append(int(cos.argmax()) == i // self.cfg.seeds)
            sims.append(float(cos[i // self.cfg.seeds]))
        return {
            "famous_top1": float(np.mean(hits)),
            "famous_similarity": float(np.mean(sims)),
            "famous_similarity_clips": [round(x, 4) for x in sims],  # for paired differences
        }


def scenes_for(trigger: str, photos: Path, n: int) -> list[str]:
    """Prompts naming the person, in backgrounds their photos never show."""
    truth = json.loads((photos / "truth.json").read_text())
    seen = {p["background"]["background_name"] for p in truth["photos"]}
    free = [c for c in BACKGROUND_COLOURS if c not in seen] or list(BACKGROUND_COLOURS)
    acts = ["speaking", "silent", "talking, smiling", "quiet"]
    return [f"{trigger}, {acts[i % 4]}, in front of a {free[i % len(free)]} wall" for i in range(n)]


UNRELATED = [
    "a man with short black hair, speaking, in front of a grey wall",
    "a woman with long blonde hair, silent, against a teal background",
    "a person with curly red hair and round glasses, speaking, on a yellow backdrop",
]


# ------------------------------------------------------------------------------ training


def run_child(argv: list[str], log: Path) -> dict:
    """Run ``python ARGV`` with its output in ``log``; its wall time in seconds."""
    t0 = time.time()
    with open(log, "w") as f:
        if subprocess.run([sys.executable, *argv], stdout=f, stderr=f).returncode != 0:
            raise RuntimeError(f"a study run failed; see {log}")
    return {"seconds": time.time() - t0}


def train_child(args: list[str], log: Path) -> dict:
    """``cameo train ARGS`` in a child process; its wall time."""
    return run_child(["-c", TRAIN_MAIN, "train", *args], log)


def lora_args(
    cfg: StudyConfig, photos: Path, trigger: str, out: Path, rank: int, extra=()
) -> list[str]:
    return [
        "--data", str(photos), "--trigger", trigger, "--name", trigger, "--out", str(out),
        "--base", cfg.base, "--rank", str(rank), "--alpha", str(rank), "--steps", str(cfg.steps),
        "--validate-every", "-1", "--overwrite", "--log-with", "none", *extra,
    ]  # fmt: skip


def training_digest(args: list[str]) -> str:
    """A digest of a LoRA's training: its arguments and ``cameo train``'s defaults, so that a
    LoRA kept from an earlier study is reused only if it would be trained the same way."""
    text = json.dumps([args, asdict(TrainConfig())], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def measure_steps(base: str, rank: int, repeats: int = 5) -> dict:
    """``recipes/step_cost.py`` in a fresh process: median seconds of one training step at
    ``cameo train``'s default batch and the memory those steps add over the loaded model.
    ``rank`` 0 means full fine-tuning."""
    argv = ["--base", base, "--rank", str(rank), "--repeats", str(repeats)]
    out = subprocess.run(
        [sys.executable, str(RECIPES / "step_cost.py"), *argv],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def full_child(cfg: StudyConfig, photos: Path, trigger: str, out: Path, lr: float) -> dict:
    """``recipes/full_finetune.py`` on ``photos`` at ``lr`` in a child process (continuing from
    its checkpoint if an earlier one stopped); its wall time."""
    args = [
        "--data", str(photos), "--trigger", trigger, "--name", trigger, "--out", str(out),
        "--base", cfg.base, "--steps", str(cfg.steps), "--lr", str(lr),
    ]  # fmt: skip
    if ckpt.latest(out / "checkpoints") is not None:
        args.append("--resume")
    out.mkdir(parents=True, exist_ok=True)
    return run_child([str(RECIPES / "full_finetune.py"), *args], out / "train.log")


# ------------------------------------------------------------------------------ the parts


@dataclass
class Person:
    index: int
    trigger: str
    photos: Path


def lora_file_stats(path: Path) -> dict:
    with safe_open(str(path), "pt") as f:
        names = f.keys()
        n = sum(int(np.prod(f.get_slice(k).get_shape())) for k in names)
    return {"params": int(n), "file_kib": path.stat().st_size / 1024}


class Study:
    """Runs the parts; each writes its rows into ``self.results``."""

    def __init__(self, cfg: StudyConfig):
        cfg.validate()
        self.cfg, self.work = cfg, Path(cfg.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.judge = Judge(cfg)
        self.people = []
        for idx, trig in zip(cfg.people.split(","), cfg.triggers.split(","), strict=True):
            photos = self.work / f"person-{idx}" / "photos"
            if not (photos / "truth.json").exists():
                write_person_folder(int(idx), photos, 20, overwrite=True)
            self.people.append(Person(int(idx), trig.strip(), photos))
        self.results: dict = {"config": asdict(cfg), **earlier_parts(Path(cfg.out), cfg)}

    def pipe(self, *loras: str, mix: str = "linear", regions: list[str] | None = None):
        pipe = load_pipeline(self.cfg.base)
        loaded = apply_loras(
            pipe, list(loras), base_dir=resolve_base(self.cfg.base), mix=mix, regions=regions
        )
        return pipe, loaded

    def lora(
        self, person: Person, rank: int, slot: int = -1, lr: float | None = None
    ) -> tuple[Path, dict]:
        """Train (once) and return the LoRA of ``person`` at ``rank`` (orthogonal slot or -1;
        learning rate ``lr`` or cameo train's default)."""
        tag = f"r{rank}" + (f"-slot{slot}" if slot >= 0 else "") + (f"-lr{lr:g}" if lr else "")
        out = self.work / f"person-{person.index}" / tag
        path, usage_file = out / f"{person.trigger}.safetensors", out / "usage.json"
        extra = ["--orthogonal-slot", str(slot)] if slot >= 0 else []
        extra += ["--lr", str(lr)] if lr else []
        args = lora_args(self.cfg, person.photos, person.trigger, out, rank, extra)
        digest = training_digest(args)
        done = json.loads(usage_file.read_text()) if usage_file.exists() else {}
        if not (path.exists() and done.get("recipe") == digest):  # retrain when defaults change
            out.mkdir(parents=True, exist_ok=True)
            usage = {**train_child(args, out / "train.log"), "recipe": digest}
            usage_file.write_text(json.dumps(usage))
        return path, json.loads(usage_file.read_text())

    def scenes(self, person: Person) -> list[str]:
        return scenes_for(person.trigger, person.photos, self.cfg.scenes)

    # -- rank
    def rank_part(self) -> None:
        a = self.people[0]
        rows = []
        for r in [int(x) for x in _floats(self.cfg.ranks)]:
            path, usage = self.lora(a, r)
            pipe, _ = self.pipe(f"{path}:1")
            rows.append(
                {"rank": r, **lora_file_stats(path), **measure_steps(self.cfg.base, r),
                 "train_s": usage["seconds"],
                 **self.judge.score(pipe, self.scenes(a), a.photos)}
            )  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        self.results["rank"] = rows

    # -- scale
    def scale_part(self) -> None:
        a = self.people[0]
        path, _ = self.lora(a, self.cfg.rank)
        pipe, loaded = self.pipe(f"{path}:1")
        rows = []
        for s in _floats(self.cfg.scales):
            pipe.set_adapters(loaded.names, [s])
            rows.append({"scale": s, **self.judge.score(pipe, self.scenes(a), a.photos)})
            print(json.dumps(rows[-1]), flush=True)
        self.results["scale"] = rows

    # -- full fine-tuning
    def full_model(self, a: Person, lr: float):
        """Fine-tune (once) every weight of the transformer on ``a``'s photos at ``lr``; returns
        the pipeline with it and the run's usage."""
        tag = "full" if lr == 1e-4 else f"full-lr{lr:g}"  # "full": the folder of earlier runs
        out = self.work / f"person-{a.index}" / tag
        if not (out / "transformer").exists():
            (out / "usage.json").write_text(
                json.dumps(full_child(self.cfg, a.photos, a.trigger, out, lr))
            )
        pipe, _ = self.pipe()
        pipe.transformer = WanTransformer3DModel.from_pretrained(out / "transformer").eval()
        return pipe, json.loads((out / "usage.json").read_text())

    def full_part(self) -> None:
        a, rank = self.people[0], self.cfg.rank
        base_pipe, _ = self.pipe()
        n_all = sum(p.numel() for p in base_pipe.transformer.parameters())

        def lora_row(lr: float | None) -> tuple:
            path, usage = self.lora(a, rank, lr=lr)
            name = f"LoRA r{rank}" + (f" (lr {lr:g})" if lr else "")
            return name, self.pipe(f"{path}:1")[0], usage, lora_file_stats(path)["params"], rank

        loras = [lora_row(None), *(lora_row(lr) for lr in _floats(self.cfg.lora_lrs))]
        fulls = [
            (f"full fine-tuning (lr {lr:g})", *self.full_model(a, lr), n_all, 0)
            for lr in _floats(self.cfg.full_lrs)
        ]
        rows = []
        for name, pipe, usage, params, trained_rank in (
            ("base model", base_pipe, None, 0, 0),
            *loras,
            *fulls,
        ):
            row = {"model": name, "trained_params": params}
            if usage is not None:
                row |= {
                    "train_s": usage["seconds"],
                    **measure_steps(self.cfg.base, trained_rank),
                }
            row |= self.judge.score(pipe, self.scenes(a), a.photos)
            row["unrelated_fidelity"] = self.judge.fidelity(pipe, UNRELATED)
            row |= self.judge.famous(pipe, self.cfg.famous)
            rows.append(row)
            print(json.dumps(row), flush=True)
        self.results["full"] = rows

    # -- composition
    def compose_part(self) -> None:
        a, b = self.people

        @functools.cache
        def loras(kind: str) -> tuple[Path, Path]:  # trained when a setup first needs them
            orthogonal = kind == "orthogonal"
            pair = [
                self.lora(p, self.cfg.rank, slot=i if orthogonal else -1)[0]
                for i, p in enumerate((a, b))
            ]
            return tuple(pair)

        @functools.cache
        def predicted(kind: str) -> float:
            first, second = loras(kind)
            return interference_score(overlap(load_modules(first)[0], load_modules(second)[0]))

        # each alone, in the pair clips' scenes with the words of their half, from the noise of
        # their half: identification on 16 clips varies by +-0.1 with the noise alone, so
        # unpaired singles made "kept / single" mostly a draw (mike alone: 0.94 from his own seeds, 0.69 from
        # the pair's left half, which windows then matched)
        singles, single_identity = {}, {}
        for side, (p, path) in enumerate(zip((a, b), loras("standard"), strict=True)):
            pipe, _ = self.pipe(f"{path}:1")
            alone = [half[side].split("=", 1)[1] for half in self.pair_prompts(a, b)[1]]
            score = self.judge.score(pipe, alone, p.photos, side)
            singles[p.trigger], single_identity[p.trigger] = (
                score["identification"],
                score["identity"],
            )
        regions = [f"{a.trigger}=left", f"{b.trigger}=right"]
        wanted = self.cfg.compose_methods()
        kept = self.earlier_compose_rows() if wanted else {}
        rows = []
        for name, kind, mix, own_prompts in COMPOSE_SETUPS:
            if wanted and name not in wanted:
                if name in kept:
                    rows.append(kept[name])
                continue
            files = loras(kind)
            pipe, loaded = self.pipe(*(f"{f}:1" for f in files), mix=mix, regions=regions)
            rows.append(
                {
                    "method": name,
                    "predicted_interference": predicted(kind),
                    **self.pair_scores(pipe, loaded, a, b, own_prompts),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        for row in rows:  # kept rows too: against the singles of this run
            row["kept_vs_single"] = (
                min(row[f"{p.trigger}_identification"] / singles[p.trigger] for p in (a, b))
                if all(singles.values())
                else None
            )
        self.results["compose"] = {
            "single_identification": singles,
            "single_identity": single_identity,
            "singles_noise": "paired: each alone from their half of the pair clip's noise",
            "rows": rows,
        }

    def earlier_compose_rows(self) -> dict[str, dict]:
        """The compose rows of the earlier results.json in ``out``, by method name."""
        prev = earlier_results(Path(self.cfg.out))
        return {r["method"]: r for r in prev.get("compose", {}).get("rows", [])}

    def pair_prompts(self, a: Person, b: Person) -> tuple[list[str], list[list[str]]]:
        """The two-person prompts (one per wall), and for each the --region-prompt values that
        give each half its own person's words."""
        walls = [BACKGROUND_COLOURS[k % len(BACKGROUND_COLOURS)] for k in range(self.cfg.scenes)]
        prompts = [
            f"two people side by side in front of a {wall} wall: "
            f"on the left {a.trigger} speaking, on the right {b.trigger} silent"
            for wall in walls
        ]
        own = [
            [
                f"left={a.trigger}, speaking, in front of a {wall} wall",
                f"right={b.trigger}, silent, in front of a {wall} wall",
            ]
            for wall in walls
        ]
        return prompts, own

    def pair_scores(self, pipe, loaded, a: Person, b: Person, own_prompts: bool = False) -> dict:
        """Each person's identity, identification and fidelity in their half of two-person
        clips; with ``own_prompts``, each half also reads a prompt of its own person alone."""
        prompts, own = self.pair_prompts(a, b)
        ps = [p for p in prompts for _ in range(self.cfg.seeds)]
        frames = self.judge.clips(
            pipe, prompts, width=128, loaded=loaded, region_prompts=own if own_prompts else None
        )  # (F, 64, 128, 3) each
        out = {}
        for side, p in enumerate((a, b)):
            refs, self_sim = self.judge.references(p.photos)
            recs = [
                score_clip(self.judge.eyes, f, q, refs, self_sim)
                for f, q in zip(frames, ps, strict=True)
            ]
            mine = [{**r, "people": [r["people"][side]]} for r in recs]  # this person's region only
            s = summarise(mine)
            out[f"{p.trigger}_identity"] = s.get("identity_normalised")
            out[f"{p.trigger}_identification"] = s.get("identification_rate")
            out[f"{p.trigger}_fidelity"] = s.get("prompt_fidelity")
        return out

    def run(self) -> Path:
        t0 = time.time()
        for part in self.cfg.parts.split(","):
            getattr(self, f"{part}_part")()
            self.results.setdefault("runs", {})[part] = {
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "people": self.cfg.people,
                "steps": self.cfg.steps,
                "scenes": self.cfg.scenes,
                "seeds": self.cfg.seeds,
                **({"methods": self.cfg.methods} if part == "compose" and self.cfg.methods else {}),
                **(
                    {k: getattr(self.cfg, k) for k in ("famous", "full_lrs", "lora_lrs")}
                    if part == "full"
                    else {}
                ),
            }
            self.save()
        self.results["minutes"] = (time.time() - t0) / 60
        return self.save()

    def save(self) -> Path:
        return write_report(self.results, Path(self.cfg.out))


def earlier_results(out: Path) -> dict:
    """An earlier run's results.json in ``out``, or {}."""
    path = out / "results.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def earlier_parts(out: Path, cfg: StudyConfig) -> dict:
    """The parts of an earlier results.json in ``out`` that this run does not redo (with the
    run that measured each), so ``--parts full`` adds a table without dropping the others."""
    prev = earlier_results(out)
    if not prev:
        return {}
    now = set(cfg.parts.split(","))
    kept = {p: prev[p] for p in PARTS if p in prev and p not in now}
    if not kept:
        return {}
    old = prev["config"]
    runs = prev.get("runs", {})
    default_run = {k: old[k] for k in ("people", "steps", "scenes", "seeds")} | {
        "date": prev["date"]
    }
    kept["runs"] = {p: runs.get(p, default_run) for p in list(kept)}
    if "notes" in prev:  # hand-written reading of the numbers; kept for the author to revise
        kept["notes"] = prev["notes"]
    return kept


def run_study(cfg: StudyConfig) -> Path:
    """Run the configured parts; returns the written results.md. Parts that ``cfg.out``
    already holds are replaced only with ``cfg.overwrite`` (checked before any work)."""
    earlier = earlier_results(Path(cfg.out))
    again = [p for p in cfg.parts.split(",") if p in earlier]
    if again and not cfg.overwrite:
        raise FileExistsError(
            f"{Path(cfg.out) / 'results.json'} already holds the {', '.join(again)} part(s)"
        )
    return Study(cfg).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python recipes/study.py",
        description="Measure LoRA's trade-offs (rank, scale, LoRA against full fine-tuning, "
        "composition) into results.md and results.json.",
    )
    add_dataclass_args(parser, StudyConfig)
    cfg = dataclass_from_args(StudyConfig, parser.parse_args(argv))
    try:
        cfg.validate()
    except ValueError as e:
        parser.error(str(e))
    print(f"results written to {run_study(cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
