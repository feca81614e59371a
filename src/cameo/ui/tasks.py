"""The web app's work, as jobs that call the library: train, generate, measure, export.
And the progress of a training run, read from the files the trainer writes as it goes
(``losses.jsonl``, ``previews/``, ``metrics.json``) plus its log lines."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..formats import FORMATS
from ..generation import generate_to_files
from ..lora_files import convert_file
from ..metrics.evaluate import Eyes, eval_lora
from ..training import Trainer, TrainingInterrupted
from ..training.loop import Events
from .jobs import Job, JobStopped

# ------------------------------------------------------------------------------ training


def _stop_when_asked(job: Job, trainer: Trainer) -> None:
    """Turn the page's Cancel into ``trainer.stop()``: the run stops after its current step
    and saves a checkpoint."""
    while not job.done_event.is_set():
        if job.cancel_requested.wait(0.2):
            trainer.stop()
            return


def train_work(cfg, resume: bool = False):
    """A job that trains one LoRA with ``cfg`` (a ``TrainConfig``); its result is the path.
    Each validation's scores land in ``job.extra["validation"]`` as (step, metrics)."""

    def on_validation(job: Job, step: int, metrics: dict) -> None:
        job.extra["validation"] = (step, metrics)

    def work(job: Job) -> Path:
        events = Events(on_validation=[lambda step, m: on_validation(job, step, m)])
        trainer = Trainer(cfg, resume=resume, log=job.log, events=events)
        job.log(trainer.report.format())
        threading.Thread(target=_stop_when_asked, args=(job, trainer), daemon=True).start()
        try:
            path = trainer.train()
        except TrainingInterrupted as e:
            step = trainer.loop.step if trainer.loop is not None else None
            at = f" at step {step}" if step is not None else ""
            raise JobStopped(f"stopped{at}; the checkpoint is saved. Press Resume to go on.") from e
        job.message = f"done: the LoRA is trained ({path.name})"
        return path

    return work


@dataclass
class TrainProgress:
    """What the Train tab shows of a run."""

    step: int = 0
    total: int = 0
    losses: list[tuple[int, float]] = field(default_factory=list)
    identity: float | None = None
    identity_step: int | None = None
    preview: Path | None = None
    eta_s: float | None = None

    def summary(self) -> str:
        text = f"step {self.step} / {self.total}"
        if self.losses:
            text += f", loss {self.losses[-1][1]:.4f}"
        if self.eta_s is not None and self.step < self.total:
            text += f", about {format_seconds(self.eta_s)} left"
        return text


def format_seconds(s: float) -> str:
    s = max(0, round(s))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def read_losses(run: Path) -> list[tuple[int, float]]:
    """(step, loss) of the run, one per step (a resumed run re-logs steps after its last
    checkpoint; the latest value wins). Half-written last lines are skipped."""
    path = run / "losses.jsonl"
    by_step: dict[int, float] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
                by_step[int(row["step"])] = float(row["loss"])
            except (ValueError, KeyError, TypeError):
                continue
    return sorted(by_step.items())


def latest_preview(run: Path) -> Path | None:
    """The first clip of the latest validation (``previews/stepNNNNN-0.mp4``)."""
    clips = sorted((run / "previews").glob("step*-0.mp4"))
    return clips[-1] if clips else None


def latest_identity(job: Job | None, run: Path) -> tuple[int | None, float | None]:
    """The identity score of the latest validation: from the running job's validation events,
    or from the finished run's ``metrics.json``."""
    if job is not None and "validation" in job.extra:
        step, metrics = job.extra["validation"]
        score = metrics.get("identity_normalised")
        if score is not None:
            return step, float(score)
    metrics = run / "metrics.json"
    if metrics.is_file():
        data = json.loads(metrics.read_text())
        score = (data.get("metrics") or {}).get("identity_normalised")
        if score is not None:
            return data.get("best_step"), float(score)
    return None, None


def read_progress(run: Path, total: int, job: Job | None) -> TrainProgress:
    """The run's progress. The ETA uses the speed since this job's first observed step, so
    loading the model (or the steps of a run it resumes) does not count."""
    p = TrainProgress(total=total, losses=read_losses(run), preview=latest_preview(run))
    p.step = p.losses[-1][0] + 1 if p.losses else 0
    p.identity_step, p.identity = latest_identity(job, run)
    if job is not None and job.started is not None:
        now = time.time()
        at_start = job.extra.setdefault("step_at_start", p.step)
        if p.step > at_start:
            t0, s0 = job.extra.setdefault("first_step_seen", (now, p.step))
            if p.step > s0:
                p.eta_s = (total - p.step) * (now - t0) / (p.step - s0)
    return p


# ---------------------------------------------------------------------- generate, measure


def generate_work(cfg):
    """A job that renders one clip with ``cfg`` (a ``GenerateConfig``); result: the MP4."""

    def work(job: Job) -> Path:
        paths = generate_to_files(cfg)
        job.message = f"done: {paths[0].name}"
        return paths[0]

    return work


def evaluate_work(lora: Path, photos: Path, base: str, seeds: int):
    """A job that measures a LoRA against the base model (``cameo eval``); result: the report."""

    def work(job: Job) -> dict:
        report = eval_lora(Eyes(), lora, photos, base=base, seeds=seeds)
        (lora.parent / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
        job.message = "done: measured"
        return report

    return work


METRIC_HEADERS = ["prompts", "model", "identity (norm.)", "identified", "prompt fidelity"]
# The face judge (real faces): no line-up and no prompt fidelity, but whether a face is found,
# the share of frames it calls the same person, and the similarity normalised by the photos'.
FACE_METRIC_HEADERS = [
    "prompts",
    "model",
    "identity (norm.)",
    "face found",
    "same person",
    "similarity (norm.)",
]


def _num(s: dict, key: str, fmt: str) -> str:
    v = s.get(key)
    return "" if v is None else format(v, fmt)


def _row(group: str, variant: str, s: dict, face: bool) -> list[str]:
    if face:
        return [
            group,
            variant,
            _num(s, "identity_normalised", ".3f"),
            _num(s, "face_found", ".2f"),
            _num(s, "same_person", ".2f"),
            _num(s, "similarity_normalised", ".3f"),
        ]
    return [
        group,
        variant,
        _num(s, "identity_normalised", ".3f"),
        _num(s, "identification_rate", ".2f"),
        _num(s, "prompt_fidelity", ".2f"),
    ]


def metrics_table(run: Path) -> tuple[list[str], list[list[str]]]:
    """The Results table, (headers, rows): the training run's last validation, then, once
    measured, the ``cameo eval`` summary (LoRA and base model on prompts that name the person
    or not). Its columns are the judge's: the face judge's numbers when the report says
    ``identity_judge: face`` (the validation's when there is no report yet)."""
    validation, report = None, None
    metrics = run / "metrics.json"
    if metrics.is_file():
        data = json.loads(metrics.read_text())
        validation = data if data.get("metrics") else None
    if (run / "eval.json").is_file():
        report = json.loads((run / "eval.json").read_text())
    judge = (report or {}).get("identity_judge") or (
        (validation or {}).get("metrics", {}).get("identity_judge")
    )
    face = judge == "face"
    headers = FACE_METRIC_HEADERS if face else METRIC_HEADERS
    blank = [""] * (len(headers) - 3)
    rows = []
    if validation:
        group = f"validation (step {validation.get('best_step')})"
        rows.append(_row(group, "lora", validation["metrics"], face))
    if report is not None:
        summary = report.get("summary", {})
        for group, d in summary.items():
            if isinstance(d, dict) and group != "sees":  # sees: one dict, not LoRA and base
                rows += [_row(group, variant, s, face) for variant, s in d.items()]
        if "leakage" in summary:
            what = "same person on others' prompts" if face else "others"
            label = f"leakage (lora - base, {what})"
            rows.append([label, "", f"{summary['leakage']:+.3f}", *blank])
    return headers, rows


def metrics_rows(run: Path) -> list[list[str]]:
    """The Results table's rows (``metrics_table`` without its headers)."""
    return metrics_table(run)[1]


def export_formats(lora: Path, exports: Path, stem: str) -> list[Path]:
    """The LoRA in every supported key format, for download."""
    exports.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in FORMATS:
        dst = exports / f"{stem}-{fmt}.safetensors"
        cov = convert_file(lora, dst, fmt, overwrite=True)
        out.extend(Path(f) for f in cov.files)  # two files for both Wan 2.2 experts
    return out
