"""What every stage shares: the one optimisation loop (``training.loop.OptimisationLoop``) with
pretraining's settings (AdamW, a cosine or constant schedule after a warm-up, gradients
clipped to norm 1, optionally a moving average of the weights),
its log (``log.jsonl``, one record every ``LOG_EVERY`` steps), its progress bar, the
``--max-minutes`` deadline and the ``--*-minutes`` step planning.

A stage's checkpoints (``<run>/<stage>/step-N``) hold the module's whole state dict, the
optimiser state and the RNG state; ``--resume`` continues from the newest.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from ..training.ema import ParameterEMA, without_averages
from ..training.loop import Checkpointed, Events, OptimisationLoop, Schedule, stop_on_sigint
from .config import PretrainConfig
from .data import prefetched

LOG_EVERY = 10  # steps between logged steps; only these read the losses back from the device
TIMED_STEPS = 30  # steps timed before a --*-minutes budget fixes the stage's step count
SKIPPED_STEPS = 3  # the first steps pay for start-up (workers, kernels); timing starts after

_STARTED = time.time()


def start_invocation() -> None:
    """Start the clock that ``--max-minutes`` counts from, across all stages of a command."""
    global _STARTED
    _STARTED = time.time()


def deadline(cfg: PretrainConfig) -> float:
    """When ``--max-minutes`` runs out (time.time() units); infinity without a budget."""
    return _STARTED + cfg.max_minutes * 60 if cfg.max_minutes > 0 else math.inf


def pick_device(name: str) -> torch.device:
    """``--device``: auto is CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _psnr(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for images in [-1, 1] (peak-to-peak 2, so peak^2 = 4)."""
    return 10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10))


def _log(run: Path, record: dict) -> None:
    with open(run / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


# ------------------------------------------------------------------------ listeners


class StageLog:
    """``on_step`` listener: the progress bar every step; a ``log.jsonl`` record (stage, step
    index, the step's values, time) at steps 1, 11, 21, ... and the last one."""

    def __init__(self, loop: OptimisationLoop, run: Path, stage: str):
        self.loop, self.run, self.stage = loop, run, stage
        self.bar = tqdm(total=loop.total_steps, initial=loop.step, desc=stage, dynamic_ncols=True)

    def __call__(self, done: int, values: dict[str, float]) -> None:
        self.bar.total = self.loop.total_steps  # a step plan may have changed it
        self.bar.update(1)
        if done % LOG_EVERY == 1 or done == self.loop.total_steps:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()})
            _log(self.run, {"stage": self.stage, "step": done - 1, **values, "t": time.time()})

    def close(self) -> None:
        self.bar.close()


def _planned_steps(run: Path, stage: str, steps: int) -> int:
    plan = run / f"{stage}_plan.json"
    return json.loads(plan.read_text())["steps"] if plan.exists() else steps


def _plan_steps(
    run: Path, stage: str, steps: int, minutes: float, done: int, rate: float, since: float
) -> int:
    """The step count that fits ``minutes`` (counted from ``since``, the stage's start) at
    ``rate`` steps/s, written down so a resumed stage keeps the same learning-rate schedule."""
    left = minutes * 60 - (time.time() - since)
    total = min(steps, max(done + 1, done + int(rate * left)))  # never past --*-steps
    (run / f"{stage}_plan.json").write_text(
        json.dumps({"steps": total, "steps_per_s": rate, "minutes": minutes})
    )
    print(f"{stage}: {rate:.2f} steps/s, planning {total} steps", file=sys.stderr)
    return total


class StepPlan:
    """``on_step`` listener for a ``--*-minutes`` budget: times ``TIMED_STEPS`` steps (after
    the first ``SKIPPED_STEPS`` of this invocation), then cuts the stage's step count to what
    fits the budget and writes it to ``<stage>_plan.json``, which a resumed stage reads instead
    of timing again. Setting ``loop.total_steps`` also sets the cosine schedule's length."""

    def __init__(self, loop: OptimisationLoop, run: Path, stage: str, steps: int, minutes: float):
        self.loop, self.run, self.stage, self.steps, self.minutes = loop, run, stage, steps, minutes
        self.started, self.first, self.timing_from = time.time(), loop.step, 0.0

    def __call__(self, done: int, _values: dict[str, float]) -> None:
        if (self.run / f"{self.stage}_plan.json").exists():
            return
        taken = done - self.first
        if taken == SKIPPED_STEPS:
            self.timing_from = time.time()
        elif taken == SKIPPED_STEPS + TIMED_STEPS:
            rate = TIMED_STEPS / (time.time() - self.timing_from)
            self.loop.total_steps = _plan_steps(
                self.run, self.stage, self.steps, self.minutes, done, rate, self.started
            )


# ------------------------------------------------------------------------------ a stage


def run_stage(
    cfg: PretrainConfig,
    run: Path,
    stage: str,
    module: torch.nn.Module,
    params: list[torch.nn.Parameter],
    *,
    steps: int,
    minutes: float,
    lr: float,
    warmup: int,
    make_batch: Callable[[int], object],
    step_loss: Callable[[object], dict[str, torch.Tensor]],
    weight_decay: float = 0.0,
    workers: int | None = None,
    ema: float = 0.0,
) -> bool:
    """Train ``params`` of ``module`` for ``steps`` steps (or what fits ``minutes``) on
    ``make_batch(step)``, resuming from ``<run>/<stage>``. ``step_loss(batch)`` calls backward
    and returns detached tensors to log. Returns True when the stage has taken all its steps,
    False when the time budget or Ctrl+C stopped it (a checkpoint is saved).

    ``ema`` > 0 keeps a moving average of ``params`` with that decay (``training.ema``),
    checkpointed beside the weights; once the stage is done the average is written into
    ``module`` (the checkpoints keep the last weights as trained)."""

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        return step_loss(next(batches))  # batches: set below, once the resumed step is known

    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=weight_decay)
    average = ParameterEMA(params, ema) if ema > 0 else None

    def tensors() -> dict[str, torch.Tensor]:
        return {**module.state_dict(), **(average.tensors() if average else {})}

    def restore(saved: dict[str, torch.Tensor], _state: dict) -> None:
        module.load_state_dict(without_averages(saved))
        if average is not None and not average.load(saved):
            print(f"{stage}: the checkpoint holds no average; it starts here", file=sys.stderr)

    loop = OptimisationLoop(
        optimizer,
        params,
        step_fn,
        total_steps=_planned_steps(run, stage, steps),
        schedule=Schedule(lr, warmup, cfg.schedule),
        checkpoint=Checkpointed(
            root=run / stage,
            tensors=tensors,
            restore=restore,
        ),
        checkpoint_every=cfg.checkpoint_every,
        deadline=deadline(cfg),
        check_every=LOG_EVERY,
        name=stage,
        hint="Lower the stage's learning rate (--vae-lr, --lr).",
        after_step=average.update if average is not None else None,
    )
    loop.resume()
    workers = cfg.workers if workers is None else workers
    batches = prefetched(make_batch, loop.step, loop.total_steps, workers)
    log = StageLog(loop, run, stage)
    plan = [StepPlan(loop, run, stage, steps, minutes)] if minutes > 0 else []
    loop.events = Events(on_step=[*plan, log])  # the plan first: the log reads its step count
    with stop_on_sigint(loop):
        result = loop.run()
    log.close()
    if not result.finished:
        print(f"{stage}: stopped at step {result.step}; continue with --resume", file=sys.stderr)
    elif average is not None:
        average.copy_to()
    return result.finished
