"""Crash-safe training checkpoints: write to a temporary folder, fsync, rename, mark complete.

A checkpoint is a folder ``step-000123/`` holding ``model.safetensors`` (weights), ``optim.pt``
(optimizer state, loaded with ``weights_only=True`` so it can never run code), ``state.json``
(step, RNG states, anything else JSON) and a ``COMPLETE`` marker written last. Readers only
trust folders with the marker, so a kill at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

MARKER = "COMPLETE"


class DiskFullError(OSError):
    """No space left for a checkpoint; the previous one is untouched."""


def _test_pause() -> None:
    """Test hook: CAMEO_CHECKPOINT_PAUSE=seconds holds a save half-written, so kill tests can
    hit the middle of a save reliably."""
    pause = float(os.environ.get("CAMEO_CHECKPOINT_PAUSE", "0") or 0)
    if pause > 0:
        time.sleep(pause)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """``t``, or a copy when it is a view into a larger buffer (safetensors refuses tensors that
    share memory, and the flat LoRA buffer of ``cameo.training.flat`` makes every weight such a view)."""
    if t.is_contiguous() and t.untyped_storage().nbytes() == t.nbytes:
        return t
    return t.contiguous() if not t.is_contiguous() else t.clone()


def save(
    root: Path,
    step: int,
    tensors: dict[str, torch.Tensor],
    state: dict[str, Any],
    optimizer: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` under ``root`` atomically and prune all but the newest ``keep``.

    Files go to a temporary folder, are fsynced, the COMPLETE marker is written last, and the
    folder is renamed into place; only then are older checkpoints pruned. A full disk raises
    DiskFullError and leaves the previous checkpoints as they were.
    """
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        weights = {k: _own_storage(v.detach().cpu()) for k, v in tensors.items()}
        save_file(weights, str(tmp / "model.safetensors"))
        _test_pause()
        if optimizer is not None:
            torch.save(optimizer, tmp / "optim.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step, "time": time.time()}))
        for f in tmp.iterdir():
            _fsync_file(f)
        (tmp / MARKER).write_text("ok\n")
        _fsync_file(tmp / MARKER)
        _fsync_dir(tmp)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno == errno.ENOSPC:
            raise DiskFullError(
                errno.ENOSPC,
                f"disk full while writing checkpoint {step} in {root}; the previous checkpoint is intact",
            ) from e
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    prune(root, keep)
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("step-*") if (p / MARKER).is_file())


def latest(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def prune(root: Path, keep: int) -> None:
    """Delete older complete checkpoints and leftover temporaries, never the newest ``keep``."""
    for old in complete_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    newest = latest(root)
    for tmp in root.glob(".tmp-step-*"):
        if newest is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any] | None]:
    """Read a complete checkpoint: (tensors, state, optimizer state or None)."""
    path = Path(path)
    if not (path / MARKER).is_file():
        raise FileNotFoundError(f"{path} is not a complete checkpoint (no {MARKER} marker)")
    tensors = load_file(str(path / "model.safetensors"))
    state = json.loads((path / "state.json").read_text())
    optim = None
    if (path / "optim.pt").is_file():
        optim = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
    return tensors, state, optim


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state().tolist()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def settings_from_run(
    cfg: Any,
    saved: Path,
    given: set[str],
    per_invocation: tuple[str, ...],
) -> list[str]:
    """Resume with the run's own settings: every dataclass field of ``cfg`` that neither this
    command line gives (``given``) nor belongs to one invocation (``per_invocation``: where and
    how fast it runs, its budget) is set from the run's config.json ``saved``, so that a
    resume continues the same schedule and shapes instead of the defaults'. A field that
    config.json lacks, because the run was saved before the field existed, takes its value in
    the config class's ``BEFORE_ADDED`` (what reproduces the code of the run's time), if any.
    Returns the names changed."""

    if not saved.is_file():
        return []
    theirs = {**getattr(cfg, "BEFORE_ADDED", {}), **json.loads(saved.read_text())}
    changed = []
    for f in dataclasses.fields(cfg):
        if f.name in per_invocation or f.name in given:
            continue
        ours = getattr(cfg, f.name)
        if dataclasses.is_dataclass(ours):
            if f.metadata.get("flatten"):  # its fields are flags: restored one by one
                nested = {**theirs, **(theirs.get(f.name) or {})}  # flat in older runs
                setattr(cfg, f.name, _restored(ours, nested, given, changed))
            continue  # other nested configs have their own rules (architecture)
        if f.name not in theirs:
            continue
        value = theirs[f.name]
        value = tuple(value) if isinstance(ours, tuple) else value
        if value != ours:
            setattr(cfg, f.name, value)
            changed.append(f.name)
    return changed


def _restored(ours: Any, theirs: dict, given: set[str], changed: list[str]) -> Any:
    """``ours`` (a dataclass) with the fields that ``theirs`` holds and ``given`` does not."""
    values = {}
    for f in dataclasses.fields(ours):
        if f.name in given or f.name not in theirs or theirs[f.name] == getattr(ours, f.name):
            continue
        values[f.name] = theirs[f.name]
        changed.append(f.name)
    return dataclasses.replace(ours, **values) if values else ours
