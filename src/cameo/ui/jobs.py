"""Long work (training, generation, measurement) runs here, one job at a time, off the web
server's threads: the page stays responsive, jobs from other tabs wait their turn with their
position shown, and a job can be cancelled while it waits or, for training, while it runs."""

from __future__ import annotations

import logging
import secrets
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..data import DatasetError
from .workspace import UploadError

log = logging.getLogger("cameo.ui")

# Exceptions whose message is written for the user (a bad setting, too few photos, a missing
# file). Anything else is a bug: the page says so in one line, the traceback goes to the log.
# FloatingPointError is the trainer's "loss diverged, lower the learning rate".
USER_ERRORS = (
    ValueError,
    DatasetError,
    UploadError,
    FileNotFoundError,
    FileExistsError,
    FloatingPointError,
)

QUEUED, RUNNING, DONE, FAILED, CANCELLED, STOPPED = (
    "queued",
    "running",
    "done",
    "failed",
    "cancelled",
    "stopped",
)
FINISHED = (DONE, FAILED, CANCELLED, STOPPED)


class JobStopped(Exception):
    """Raised by a job's work when it stopped on request (after saving what it had)."""


@dataclass
class Job:
    """One unit of background work and what the page shows of it."""

    kind: str
    session: str
    work: Callable[[Job], Any]
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    state: str = QUEUED
    result: Any = None
    message: str = ""
    lines: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    done_event: threading.Event = field(default_factory=threading.Event)
    extra: dict = field(default_factory=dict)

    def log(self, message: str) -> None:
        """The work's log callback: kept for the page (the last 200 lines)."""
        self.lines.extend(str(message).splitlines())
        del self.lines[:-200]

    @property
    def finished_ok(self) -> bool:
        return self.state == DONE

    def wait(self, timeout: float | None = None) -> bool:
        return self.done_event.wait(timeout)


class JobQueue:
    """A FIFO of jobs and the one worker thread that runs them (one at a time: on a small
    machine two trainings side by side would each run at half speed and double the memory)."""

    def __init__(self) -> None:
        self._pending: deque[Job] = deque()
        self._running: Job | None = None
        self._cv = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name="cameo-ui-jobs", daemon=True)
        self._worker.start()

    def submit(self, job: Job) -> Job:
        with self._cv:
            if self._closed:
                raise RuntimeError("the job queue is closed")
            self._pending.append(job)
            self._cv.notify()
        return job

    def position(self, job: Job) -> int:
        """0 while running (or finished), k >= 1 when k-1 jobs are ahead of it."""
        with self._cv:
            try:
                return self._pending.index(job) + 1 + (self._running is not None)
            except ValueError:
                return 0

    def cancel(self, job: Job) -> None:
        """A waiting job is dropped; a running one is asked to stop (its work decides when)."""
        with self._cv:
            if job in self._pending:
                self._pending.remove(job)
                self._finish(job, CANCELLED, "cancelled before it started")
                return
        job.cancel_requested.set()

    def active(self, session: str, kind: str | None = None) -> Job | None:
        """This session's waiting or running job (of ``kind``), if any."""
        with self._cv:
            jobs = [self._running, *self._pending]
        return next(
            (j for j in jobs if j and j.session == session and kind in (None, j.kind)), None
        )

    def close(self, timeout: float = 5.0) -> None:
        """Drop waiting jobs, ask the running one to stop, and wait a little for it."""
        with self._cv:
            self._closed = True
            while self._pending:
                self._finish(self._pending.popleft(), CANCELLED, "the app is shutting down")
            running = self._running
            self._cv.notify_all()
        if running is not None:
            running.cancel_requested.set()
        self._worker.join(timeout)

    # ---------------------------------------------------------------------------- worker

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending and not self._closed:
                    self._cv.wait()
                if self._closed:
                    return
                job = self._running = self._pending.popleft()
                job.state, job.started = RUNNING, time.time()
            try:
                self._run(job)
            finally:
                with self._cv:
                    self._running = None

    def _run(self, job: Job) -> None:
        try:
            job.result = job.work(job)
        except JobStopped as e:
            self._finish(job, STOPPED, str(e))
        except USER_ERRORS as e:
            self._finish(job, FAILED, str(e))
        except Exception as e:  # a bug: one line in the page, the traceback in the log
            log.error("job %s (%s) failed:\n%s", job.id, job.kind, traceback.format_exc())
            self._finish(job, FAILED, f"internal error ({e.__class__.__name__}: {e})")
        else:
            self._finish(job, DONE, job.message)

    @staticmethod
    def _finish(job: Job, state: str, message: str) -> None:
        job.state, job.message, job.finished = state, message, time.time()
        job.done_event.set()
