"""The handlers of ``cameo ui``'s page. Thin: each handler checks the user's input, calls the
library (``cameo.data``, ``cameo.train``, ``cameo.generate``, ``cameo.formats``,
``cameo.metrics``) through a background job, and turns the result or the mistake into text
for the page. No training or sampling logic lives here.

Each browser tab gets its own session folder under the work folder; the page keeps only the
session's id. Handlers never raise for a user mistake: they return a message.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import gradio as gr

from ..compose import MIXES as COMPOSE_MIXES
from ..data import DatasetError, PhotoReport, check_photos, scan_folder
from ..data.images import IMAGE_EXT
from ..data.world_folders import write_person_folder
from ..generation import GenerateConfig, auto_region_prompts
from ..training import TrainConfig
from ..training import checkpoint as ckpt
from .jobs import DONE, FAILED, QUEUED, RUNNING, USER_ERRORS, Job, JobQueue
from .photo_view import Thumb, draw_thumbnails, report_html
from .tasks import (
    evaluate_work,
    export_formats,
    format_seconds,
    generate_work,
    read_progress,
    train_work,
)
from .view import (
    changed,
    checked_trigger,
    default_prompt,
    frame,
    hide_path,
    loss_frame,
    metrics_frame,
    now,
    waiting_text,
    whole_number,
)
from .workspace import (
    Session,
    UploadError,
    caption_rows,
    inside,
    new_session,
    open_session,
    safe_name,
    store_upload,
    write_captions,
)

WORLD_PEOPLE = 10  # held-out world people offered as a try-out
DEFAULT_PERSON = 7  # the one `cameo demo` clones
RECOMMENDED_PHOTOS = 10
MIN_PHOTOS = TrainConfig.min_photos  # what cameo train refuses to train below
NO_PHOTOS = "No photos yet: upload some, or pick a built-in person."
MIXES = list(COMPOSE_MIXES)


def _error(e: Exception | str, workdir: Path | None = None) -> str:
    """A mistake as the page shows it; paths inside sessions are shown relative to them."""
    text = str(e)
    if workdir is not None:
        text = re.sub(re.escape(f"{workdir}/sessions/") + r"[0-9a-f]{32}/", "", text)
    return f"**Error:** {text}"


def _shows_errors(outputs: int) -> Callable:
    """Turn a user mistake raised by a handler into a message in its first output (the status
    box) and leave its other outputs as they are: the page never shows a traceback."""

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def handler(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except USER_ERRORS as e:
                message = _error(e, args[0].workdir)  # args[0] is the CameoApp
                if outputs == 1:
                    return message
                return (message, *([gr.skip()] * (outputs - 1)))

        return handler

    return wrap


class CameoApp:
    """The page's handlers, over one work folder and one job queue shared by all tabs."""

    def __init__(
        self,
        workdir: Path,
        base: str = "cameo-tiny",
        queue: JobQueue | None = None,
        device: str = "auto",
        dtype: str = "auto",
    ):
        """``device`` and ``dtype``: where clips are rendered, as ``GenerateConfig`` reads them."""
        self.workdir = Path(workdir).resolve()
        (self.workdir / "sessions").mkdir(parents=True, exist_ok=True)
        self.base = base
        self.device, self.dtype = device, dtype
        self.queue = queue or JobQueue()
        self._train_jobs: dict[str, Job] = {}
        self._shown: dict[str, dict] = {}  # per session: what the Train tab already shows
        self._checks: dict[str, tuple] = {}  # per session: (folder key, photo report, thumbs)
        self._check_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    def session(self, sid: str) -> Session:
        return open_session(self.workdir, sid)

    def start_session(self) -> tuple[str, str]:
        """A new session for a freshly loaded page: (its id, the Photos tab's first status)."""
        return new_session(self.workdir).id, NO_PHOTOS

    def open_photos(self, sid: str, trigger: str):
        """The Photos tab of a page just opened: its session's photos checked, if it has any."""
        try:
            session = self.session(sid)
        except UploadError:
            return (gr.skip(),) * 4
        return self.check_photos(session.id, trigger)

    # ------------------------------------------------------------------------ photos

    def photo_check(self, session: Session, trigger: str) -> tuple[PhotoReport, list[Thumb]]:
        """The photo check of the session's folder for the app's base (``check_photos``, the
        report ``cameo train`` writes), with its thumbnails; run again only when a file, the
        trigger or the base changed."""
        trigger = checked_trigger(trigger)
        files = sorted(p for p in session.photos.iterdir() if p.is_file())
        key = (
            self.base,
            trigger,
            tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files),
        )
        with self._lock:
            lock = self._check_locks.setdefault(session.id, threading.Lock())
        with lock:
            cached = self._checks.get(session.id)
            if cached is not None and cached[0] == key:
                return cached[1], cached[2]
            report = check_photos(
                session.photos, base=self.base, trigger=trigger, min_photos=MIN_PHOTOS
            )
            thumbs = draw_thumbnails(report, session.photos, session.thumbs)
            self._checks[session.id] = (key, report, thumbs)
            return report, thumbs

    def _photos_view(self, session: Session, trigger: str, notes: list[str] | None = None):
        """(status, report, captions, gallery) for the Photos tab, from the folder as it is."""
        rows = caption_rows(session.photos)
        table = frame(rows, ["file", "caption"])
        head = "\n".join(notes or [])
        if not rows:
            return NO_PHOTOS, head, table, ""
        try:
            report, thumbs = self.photo_check(session, trigger)
        except DatasetError as e:
            return _error(hide_path(str(e), session)), head, table, ""
        text = hide_path(report.format(), session)
        status = f"{report.usable} usable photos or clips."
        if not report.enough:
            status = _error(
                f"only {report.usable} usable photos; at least {report.min_photos} are needed, "
                "about 20 work best."
            )
        elif report.usable < RECOMMENDED_PHOTOS:
            status += f" Training works from {report.min_photos}, but about 20 work best."
        else:
            status += " Ready to train."
        warned = sum(1 for e in report.entries if e.used and e.warnings)
        if warned:
            status += f" {warned} with warnings: see below."
        return status, (head + "\n\n" + text).strip(), table, report_html(report, thumbs)

    @_shows_errors(4)
    def upload(self, sid: str, files: list[str] | None, trigger: str):
        """Store uploaded photos, captions or zips in this session's folder."""
        session = self.session(sid)
        if not files:
            raise UploadError("no files were uploaded")
        notes = []
        for f in files:
            path = Path(f)
            notes += store_upload(path, session.photos, path.name)
        return self._photos_view(session, trigger, notes)

    @_shows_errors(4)
    def use_person(self, sid: str, person: int, trigger: str):
        """Replace the photos by 20 photos of a held-out person of the built-in world."""
        session = self.session(sid)
        if self.queue.active(sid, "train"):
            raise UploadError("training is using these photos; cancel it first")
        session.clear_photos()
        write_person_folder(int(person), session.photos, 20, overwrite=True)
        return self._photos_view(session, trigger, [f"wrote 20 photos of world person {person}"])

    @_shows_errors(4)
    def clear_photos(self, sid: str, trigger: str):
        session = self.session(sid)
        if self.queue.active(sid, "train"):
            raise UploadError("training is using these photos; cancel it first")
        session.clear_photos()
        return self._photos_view(session, trigger)

    @_shows_errors(4)
    def check_photos(self, sid: str, trigger: str):
        return self._photos_view(self.session(sid), trigger)

    @_shows_errors(4)
    def save_captions(self, sid: str, table, trigger: str):
        session = self.session(sid)
        rows = table.values.tolist() if hasattr(table, "values") else list(table or [])
        n = write_captions(session.photos, rows)
        return self._photos_view(session, trigger, [f"saved {n} captions"])

    # ------------------------------------------------------------------------- train

    @_shows_errors(1)
    def start_train(self, sid, trigger, rank, steps, lr, batch, preview_every, seed) -> str:
        """Queue a new training run on this session's photos (replacing an earlier one)."""
        session = self.session(sid)
        if self.queue.active(sid, "train"):
            raise UploadError("this page already has a training run; cancel it first")
        trigger = checked_trigger(trigger)
        cfg = TrainConfig.from_options(
            data=str(session.photos),
            trigger=trigger,
            name=safe_name(trigger),
            out=str(session.run),
            base=self.base,
            rank=int(rank),
            steps=whole_number(steps, "steps"),
            lr=float(lr),
            batch=whole_number(batch, "batch"),
            validate_every=whole_number(preview_every, "preview every"),
            seed=whole_number(seed, "seed"),
            log_with="none",
            overwrite=True,
        )
        cfg.validate()
        scan_folder(session.photos, trigger, min_usable=cfg.min_photos)  # too few: say so now
        shutil.rmtree(session.run, ignore_errors=True)  # a new run starts clean
        session.run.mkdir(parents=True)
        return self._submit_train(sid, cfg, resume=False)

    @_shows_errors(1)
    def resume_train(self, sid: str, steps) -> str:
        """Continue this session's run from its last checkpoint (up to ``steps``)."""
        session = self.session(sid)
        if self.queue.active(sid, "train"):
            raise UploadError("this page's training run is still waiting or running")
        config = session.run / "config.json"
        if not config.is_file() or ckpt.latest(session.run / "checkpoints") is None:
            raise UploadError("nothing to resume: no checkpoint yet; start a training run")
        cfg = TrainConfig(**json.loads(config.read_text()))
        cfg.steps = max(whole_number(steps, "steps"), 1)
        return self._submit_train(sid, cfg, resume=True)

    def _submit_train(self, sid: str, cfg, resume: bool) -> str:
        job = Job("train", sid, train_work(cfg, resume=resume), extra={"total": cfg.steps})
        with self._lock:
            self._train_jobs[sid] = job
            self._shown.pop(sid, None)
        self.queue.submit(job)
        return self._train_status(job, None)

    @_shows_errors(1)
    def cancel_train(self, sid: str) -> str:
        self.session(sid)
        job = self.queue.active(sid, "train")
        if job is None:
            return "Nothing to cancel."
        self.queue.cancel(job)
        if job.state == RUNNING:
            return "Cancelling: the run stops after its current step and keeps a checkpoint."
        return "Cancelled before it started."

    def _train_status(self, job: Job | None, progress) -> str:
        if job is None:
            return "No training run yet."
        if job.state == QUEUED:
            return waiting_text(self.queue.position(job))
        if job.state == RUNNING:
            if progress is None or (progress.step == 0 and not progress.losses):
                return "Training: preparing (reading photos, loading the model)..."
            if progress.step >= progress.total:
                return f"Training: {progress.summary()}; rendering previews, measuring identity..."
            return f"Training: {progress.summary()}."
        if job.state == DONE:
            took = format_seconds((job.finished or 0) - (job.started or 0))
            return f"Done in {took}: the LoRA is trained. Go to **Generate**."
        if job.state == FAILED:
            return _error(job.message, self.workdir)
        return job.message[:1].upper() + job.message[1:]  # stopped or cancelled

    def poll_train(self, sid: str):
        """The Train tab's live view: status, loss curve, latest preview, identity, log.
        Unchanged parts are skipped so the plot and the playing preview do not flicker."""
        try:
            session = self.session(sid)
        except UploadError:
            return ("Reload the page to start.", *[gr.skip()] * 4)
        job = self._train_jobs.get(sid)
        if job is None:
            return (self._train_status(None, None), *[gr.skip()] * 4)
        p = read_progress(session.run, job.extra["total"], job)
        shown = self._shown.setdefault(sid, {})
        plot = changed(shown, "losses", len(p.losses), lambda: loss_frame(p.losses))
        preview = changed(shown, "preview", p.preview, lambda: p.preview and str(p.preview))
        ident = "Identity score: not measured yet (it is checked with each preview)."
        if p.identity is not None:
            ident = f"Identity score (1.0 = as alike as two real photos): **{p.identity:.3f}** at step {p.identity_step}"
        log = changed(
            shown,
            "log",
            (len(job.lines), job.state),
            lambda: hide_path("\n".join(job.lines), session),
        )
        return self._train_status(job, p), plot, preview, ident, log

    # ---------------------------------------------------------------------- generate

    def trained_lora(self, session: Session) -> Path:
        """This session's finished LoRA; a clear message when there is none yet."""
        if self.queue.active(session.id, "train"):
            raise UploadError("training is still running; generate once it is done")
        config = session.run / "config.json"
        if config.is_file():
            lora = session.lora_file(json.loads(config.read_text())["name"])
            if lora.is_file():
                return lora
        raise UploadError("no trained LoRA yet: train one on the Train tab first")

    def _generate_config(
        self,
        session,
        prompt,
        scale,
        seed,
        steps,
        second,
        second_scale,
        mix,
        own_prompts=True,
        first_frame=None,
    ):
        """The clip's settings; with a second person's LoRA, a 128-wide canvas for two, where
        (``own_prompts``) each half reads its own part of an 'on the left ... on the right ...'
        prompt. ``first_frame``: the photo an image-to-video base animates."""
        lora = self.trained_lora(session)
        loras = [f"{lora}:{float(scale)}"]
        if second:
            other = self._keep_upload(session, Path(second))
            loras.append(f"{other}:{float(second_scale)}")
        prompt = (prompt or "").strip() or default_prompt(lora, other if second else None)
        n = len(list(session.clips.glob("clip-*.mp4")))
        cfg = GenerateConfig(
            prompt=prompt,
            out=str(session.clips / f"clip-{n:03d}.mp4"),
            base=self.base,
            device=self.device,
            dtype=self.dtype,
            seed=whole_number(seed, "seed"),
            steps=whole_number(steps, "sampling steps"),
            lora=loras,
            mix=mix if second else "linear",  # one person: nothing to compose
            width=128 if second else 64,  # two people stand side by side
            region_prompt=["auto"]
            if second and own_prompts and auto_region_prompts(prompt)
            else [],
            image=str(self._keep_image(session, Path(first_frame))) if first_frame else "",
            overwrite=True,
        )
        cfg.validate()
        return cfg

    @staticmethod
    def _keep_image(session: Session, src: Path) -> Path:
        """The first-frame photo, copied into the session (the browser's copy is temporary)."""
        if src.suffix.lower() not in IMAGE_EXT:
            raise UploadError(f"the first frame must be a photo, not {src.name!r}")
        dest = session.uploads / f"first-{safe_name(src.name)}"
        if not inside(dest, session.uploads):
            raise UploadError(f"refused file name {src.name!r}")
        shutil.copyfile(src, dest)
        return dest

    @staticmethod
    def _keep_upload(session: Session, src: Path) -> Path:
        if src.suffix.lower() != ".safetensors":
            raise UploadError("the second person's LoRA must be a .safetensors file")
        dest = session.uploads / safe_name(src.name)
        if not inside(dest, session.uploads):
            raise UploadError(f"refused file name {src.name!r}")
        shutil.copyfile(src, dest)
        return dest

    def generate(self, sid, *settings) -> Iterator[tuple]:
        """Queue a clip and report until it is ready; then the page plays it. ``settings``:
        the Generate tab's fields, as ``_generate_config`` takes them after the session."""
        try:
            session = self.session(sid)
            cfg = self._generate_config(session, *settings)
        except USER_ERRORS as e:
            yield _error(e, self.workdir), gr.skip()
            return
        job = self.queue.submit(Job("generate", sid, generate_work(cfg)))
        yield from self._follow(job, "Generating", lambda: str(job.result))

    def _follow(self, job: Job, doing: str, result: Callable) -> Iterator[tuple]:
        """Yield (status, skip) while ``job`` waits or runs, then (status, result())."""
        while not job.wait(0.5):
            if job.state == QUEUED:
                yield waiting_text(self.queue.position(job)), gr.skip()
            else:
                took = format_seconds(now() - (job.started or now()))
                yield f"{doing}... ({took})", gr.skip()
        if job.state == DONE:
            took = format_seconds((job.finished or 0) - (job.started or 0))
            yield f"Done in {took}.", result()
        else:
            yield _error(job.message, self.workdir), gr.skip()

    # ------------------------------------------------------------------------ results

    @_shows_errors(2)
    def results(self, sid: str):
        session = self.session(sid)
        frame = metrics_frame(session.run)
        status = "" if len(frame) else "No results yet: train a LoRA first."
        return status, frame

    def measure(self, sid: str, seeds) -> Iterator[tuple]:
        """Queue ``cameo eval`` of the trained LoRA; then show the table."""
        try:
            session = self.session(sid)
            lora = self.trained_lora(session)
        except USER_ERRORS as e:
            yield _error(e, self.workdir), gr.skip()
            return
        work = evaluate_work(lora, session.photos, self.base, whole_number(seeds, "seeds"))
        job = self.queue.submit(Job("evaluate", sid, work))
        yield from self._follow(job, "Measuring", lambda: metrics_frame(session.run))

    @_shows_errors(2)
    def downloads(self, sid: str):
        session = self.session(sid)
        lora = self.trained_lora(session)
        stem = lora.stem
        paths = export_formats(lora, session.exports, stem)
        names = ", ".join(p.name for p in paths)
        return f"Ready: {names}.", [str(p) for p in paths]
