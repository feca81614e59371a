"""The one optimisation loop every trainer in cameo runs: LoRA training, pretraining's stages,
full fine-tuning and the eyes' training.

Per step it sets the learning rate from the schedule, calls the trainer's ``step_fn`` (forward
and backward; returns the values to log), clips the gradients, steps the optimiser and zeroes
the gradients; then it tells the listeners (``Events``), checkpoints every
``checkpoint_every`` steps, and stops early when asked (``stop()``, Ctrl+C), when a listener
says so, or when the time budget runs out. Checkpoints hold the trainable tensors, the
optimiser state, the RNG state and whatever the trainer adds (``Checkpointed``); ``resume()``
restores all of it, so a resumed run takes the steps an uninterrupted one would have taken.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..diffusion import lr_at
from . import checkpoint as ckpt

Tensor = torch.Tensor
StepFn = Callable[[int], dict[str, Tensor | float]]


@dataclass
class Events:
    """Listeners of a run. ``on_step(step, logs)`` after every optimiser step (``step`` counts
    the steps done, logs are floats, read on the steps the loop checks: every
    ``check_every``-th and the last; empty on the others); it may return True to stop the run
    early (after a checkpoint). ``on_checkpoint(step, path)`` after each checkpoint is complete.
    ``on_validation(step, metrics)``: trainers that validate call these with what they measured
    (the LoRA trainer: identity and prompt fidelity of its previews)."""

    on_step: list[Callable[[int, dict[str, float]], bool | None]] = field(default_factory=list)
    on_checkpoint: list[Callable[[int, Path], None]] = field(default_factory=list)
    on_validation: list[Callable[[int, dict], None]] = field(default_factory=list)


@dataclass
class Checkpointed:
    """What a checkpoint holds beyond the optimiser: ``tensors()`` (name -> tensor, usually the
    trainable parameters) and ``state()`` (JSON, stored beside the loop's own ``step`` and
    ``rng``), and how to put them back (``restore(tensors, state)``).
    ``optimizer_state``/``load_optimizer_state`` translate the optimiser's state when the trainer
    keeps it in another layout (flat LoRA buffers); by default the optimiser's own."""

    root: Path
    tensors: Callable[[], dict[str, Tensor]]
    restore: Callable[[dict[str, Tensor], dict[str, Any]], None]
    state: Callable[[], dict[str, Any]] = dict
    optimizer_state: Callable[[], dict] | None = None
    load_optimizer_state: Callable[[dict], None] | None = None
    generators: list[torch.Generator] = field(default_factory=list)
    keep: int = 2


@dataclass
class Schedule:
    """Learning rate at each step: linear warm-up, then cosine decay or constant."""

    lr: float
    warmup: int = 0
    kind: str = "cosine"

    def at(self, step: int, total: int) -> float:
        return lr_at(step, total, self.lr, self.warmup, self.kind)


@dataclass
class LoopResult:
    """How a run ended: ``done`` (all steps), ``stopped`` (``stop()`` or Ctrl+C), ``early``
    (a listener asked) or ``deadline`` (the time budget); ``step`` is the steps done."""

    step: int
    reason: str

    @property
    def finished(self) -> bool:
        return self.reason in ("done", "early")


class OptimisationLoop:
    """Runs ``step_fn`` under one optimiser until ``total_steps``; see the module docstring.

    ``clip`` replaces the gradient clipping (Accelerate's or a fused one) and returns the norm;
    ``zero_grad`` replaces the optimiser's; ``after_step`` runs after each optimiser step (an
    EMA). On every ``check_every``-th step and the last, the loop reads the step's values back
    from the device (a wait for it): a non-finite loss or gradient norm raises
    ``FloatingPointError`` and leaves the last checkpoint as it was, and ``on_step`` gets the
    values; on the other steps the device runs ahead and ``on_step`` gets an empty dict."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        params: list[Tensor],
        step_fn: StepFn,
        *,
        total_steps: int,
        schedule: Schedule,
        checkpoint: Checkpointed | None = None,
        checkpoint_every: int = 100,
        max_grad_norm: float | None = 1.0,
        clip: Callable[[list[Tensor], float], Tensor | float | None] | None = None,
        zero_grad: Callable[[], None] | None = None,
        after_step: Callable[[int], None] | None = None,
        deadline: float = math.inf,
        check_every: int = 1,
        is_main_process: bool = True,
        events: Events | None = None,
        name: str = "train",
        hint: str = "Lower --lr, or use --mixed-precision no.",
    ):
        self.optimizer, self.params, self.step_fn = optimizer, params, step_fn
        self.total_steps, self.schedule = total_steps, schedule
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.max_grad_norm, self.clip = max_grad_norm, clip or _clip
        self.zero_grad = zero_grad or (lambda: optimizer.zero_grad(set_to_none=True))
        self.after_step, self.deadline, self.check_every = after_step, deadline, check_every
        self.is_main_process, self.events, self.name = is_main_process, events or Events(), name
        self.hint = hint  # what the user can change when the values become non-finite
        self.step = 0
        self._stop = threading.Event()

    # -------------------------------------------------------------------- control

    def stop(self) -> None:
        """Ask the run to stop after the step in progress (thread-safe); it saves a checkpoint."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def resume(self) -> int:
        """Restore the newest complete checkpoint, if any; returns the step it was taken at."""
        if self.checkpoint is None:
            return 0
        last = ckpt.latest(self.checkpoint.root)
        if last is None:
            return 0
        tensors, state, optim = ckpt.load(last)
        self.checkpoint.restore(tensors, state)
        if optim is not None:
            load = self.checkpoint.load_optimizer_state or self.optimizer.load_state_dict
            load(optim)
        ckpt.set_rng_state(state["rng"])
        for g, s in zip(self.checkpoint.generators, state.get("generators", []), strict=True):
            g.set_state(torch.tensor(s, dtype=torch.uint8))
        self.step = int(state["step"])
        print(f"{self.name}: resumed from {last} (step {self.step})", file=sys.stderr)
        return self.step

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (main process only)."""
        if self.checkpoint is None or not self.is_main_process:
            return None
        c = self.checkpoint
        optim = c.optimizer_state() if c.optimizer_state else self.optimizer.state_dict()
        state = {**c.state(), "rng": ckpt.rng_state()}
        if c.generators:
            state["generators"] = [g.get_state().tolist() for g in c.generators]
        path = ckpt.save(c.root, self.step, c.tensors(), state, optim, keep=c.keep)
        for fn in self.events.on_checkpoint:
            fn(self.step, path)
        return path

    # ----------------------------------------------------------------------- the run

    def run(self) -> LoopResult:
        """Take steps from ``self.step`` (0, or where ``resume()`` left it) to the end."""
        while self.step < self.total_steps:
            if self.stop_requested:
                self.save_checkpoint()
                return LoopResult(self.step, "stopped")
            early = self._one_step()
            due = self.step % self.checkpoint_every == 0 or self.step == self.total_steps
            over = time.time() > self.deadline
            if due or early or over:
                self.save_checkpoint()
            if early:
                return LoopResult(self.step, "early")
            if over and self.step < self.total_steps:
                print(f"{self.name}: time budget reached at step {self.step}", file=sys.stderr)
                return LoopResult(self.step, "deadline")
        return LoopResult(self.step, "done")

    def _one_step(self) -> bool:
        step = self.step
        for group in self.optimizer.param_groups:
            group["lr"] = self.schedule.at(step, self.total_steps)
        logs = self.step_fn(step)
        check = step % self.check_every == 0 or step + 1 == self.total_steps
        if check:
            _check_finite(logs, f"{self.name} step {step}", self.hint)
        if self.max_grad_norm is not None:
            norm = self.clip(self.params, self.max_grad_norm)
            if check and norm is not None and not math.isfinite(float(norm)):
                raise FloatingPointError(
                    f"{self.name}: gradients became non-finite at step {step}; the last good "
                    f"checkpoint is kept. {self.hint}"
                )
        self.optimizer.step()
        self.zero_grad()
        if self.after_step is not None:
            self.after_step(step)
        self.step = step + 1
        values = {k: float(v) for k, v in logs.items()} if self.events.on_step and check else {}
        return any(bool(fn(self.step, values)) for fn in self.events.on_step)


def _clip(params: list[Tensor], max_norm: float) -> Tensor:
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def _check_finite(logs: dict[str, Tensor | float], where: str, hint: str) -> None:
    values = {k: float(v) for k, v in logs.items()}
    if not all(math.isfinite(v) for v in values.values()):
        bad = ", ".join(f"{k}={v}" for k, v in values.items() if not math.isfinite(v))
        raise FloatingPointError(
            f"{where}: values became non-finite ({bad}); the last good checkpoint is kept. {hint}"
        )


@contextlib.contextmanager
def stop_on_sigint(loop: OptimisationLoop) -> Iterator[None]:
    """First Ctrl+C asks ``loop`` to stop after the current step; a second one aborts."""

    def handler(signum, frame):
        if loop.stop_requested:
            raise KeyboardInterrupt
        loop.stop()
        print("\nstopping after this step (Ctrl+C again to abort without saving)", file=sys.stderr)

    try:
        old = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread (e.g. inside a web app worker)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
