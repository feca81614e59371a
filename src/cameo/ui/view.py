"""Small pieces of the web app's page: parsing what the user typed, wording statuses, the
tables and plots' frames, and sending only what changed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import gradio as gr
import pandas as pd

from ..metrics.evaluate import read_lora_trigger
from .tasks import metrics_table
from .workspace import Session, UploadError, safe_name

DEFAULT_TRIGGER = "mike"


def now() -> float:
    return time.time()


def waiting_text(position: int) -> str:
    """A queued job's status: position 1 is next (nothing runs), 2 waits for one job..."""
    ahead = max(position - 1, 0)
    if ahead == 0:
        return "Starting..."
    return f"Waiting in the queue: {ahead} job{'s' * (ahead > 1)} ahead (other tabs' work)."


def default_prompt(lora: Path, second: Path | None) -> str:
    """A prompt in a scene the photos lack, naming the person (or both people) by trigger."""
    first = read_lora_trigger(lora) or DEFAULT_TRIGGER
    if second is None:
        return f"{first}, speaking, in front of a blue wall"
    other = read_lora_trigger(second) or "a person"
    return (
        "two people side by side in front of a blue wall: "
        f"on the left {first} speaking, on the right {other} smiling"
    )


def checked_trigger(trigger: str) -> str:
    trigger = (trigger or "").strip()
    if not trigger or len(trigger.split()) != 1 or safe_name(trigger) != trigger:
        raise UploadError(
            "the trigger word must be one word of letters, digits, - or _ (e.g. mike)"
        )
    return trigger


def whole_number(value, what: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UploadError(f"{what} must be a whole number") from None
    if number != int(number) or number < 0:
        raise UploadError(f"{what} must be a whole number, 0 or more")
    return int(number)


def hide_path(text: str, session: Session) -> str:
    """Reports and logs name the session folder; the page names folders within it."""
    return text.replace(str(session.photos), "your photos").replace(f"{session.root}/", "")


def frame(rows: list[list[str]], headers: list[str]):
    return pd.DataFrame(rows, columns=headers)


def metrics_frame(run: Path):
    """The Results table, its columns the judge's (``metrics_table``)."""
    headers, rows = metrics_table(run)
    return frame(rows, headers)


def loss_frame(losses: list[tuple[int, float]]):
    return pd.DataFrame(losses, columns=["step", "loss"])


def changed(shown: dict, key: str, marker, value: Callable):
    """``value()`` when ``marker`` differs from what was last sent for ``key``, else skip."""
    if shown.get(key, object()) == marker:
        return gr.skip()
    shown[key] = marker
    return value()
